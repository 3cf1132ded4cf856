"""What an operator reads: the outcome report, and the files `check` writes beside it.

The report lists every recipient's outcome, the unreachable first, with whatever else
the export knows. Pure: rows in, rows out, then written as CSV or HTML. Someone will phone
the people at the top of this list, so each row carries every column of the customer's
export row (phone, account id) next to what happened and when.

Every CSV notify writes goes through `csv_writer` and `open_csv`: UTF-8 with a byte-order
mark, so Excel shows accents right, and no cell that a spreadsheet would run as a formula.
"""

from __future__ import annotations

import csv
import html
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from notify.cleaning.clean import BIDI_CONTROL, LEGACY_ENCODING
from notify.errors import OutputError
from notify.models import CleanResult, Reject, Review, State

# What each final state means for the operator, in the order the report lists them.
AWAITING_ANSWER = "replied, waiting for an answer"  # asked something: answer them first
UNREACHABLE = "unreachable"  # needs a personal follow-up
NOT_YET = "not yet delivered"  # notify is still on it (or a send is owed)
DELIVERED = "delivered"
OUTCOME_ORDER = (AWAITING_ANSWER, UNREACHABLE, NOT_YET, DELIVERED)
OUTCOMES: dict[str, str] = {
    "invalid address": UNREACHABLE,
    State.HARD_BOUNCED.value: UNREACHABLE,
    State.GAVE_UP.value: UNREACHABLE,
    State.REFUSED.value: UNREACHABLE,
    State.SUPPRESSED.value: UNREACHABLE,
    State.BLOCKED.value: NOT_YET,
    State.PENDING.value: NOT_YET,
    State.SENDING.value: NOT_YET,
    State.DEFERRED.value: NOT_YET,
    State.SOFT_BOUNCED.value: NOT_YET,
    State.ALTERNATE.value: NOT_YET,
    State.ACCEPTED.value: DELIVERED,
}
# Review kinds of one row, and what `check` says before listing their rows.
ROW_KINDS = {
    LEGACY_ENCODING: "Rows read as Windows-1252 (not UTF-8 like the rest); check their names",
    BIDI_CONTROL: "Rows with bidirectional controls in a value; check they read right",
}
FIXED_COLUMNS = [
    "outcome",
    "state",
    "email",
    "reply",
    "replied_at",
    "sent_to",
    "reason",
    "attempts",
    "accepted_at",
    "last_change",
    "source",
    "row",
]


@dataclass(frozen=True)
class ReportRow:
    """One affected customer: what happened, and their export row for a follow-up."""

    state: str  # a State value, or "invalid address" for a row never sent to
    email: str
    sent_to: str
    reason: str
    attempts: int
    accepted_at: datetime | None
    last_change: datetime | None
    source: str
    row: int
    contact: Mapping[str, str]  # every column of the export row
    reply: str = ""  # the first lines of the customer's reply that waits for an answer
    replied_at: datetime | None = None

    @property
    def outcome(self) -> str:
        return AWAITING_ANSWER if self.reply else OUTCOMES.get(self.state, NOT_YET)

    def as_dict(self) -> dict[str, object]:
        fixed = {
            "outcome": self.outcome,
            "state": self.state,
            "email": self.email,
            "reply": self.reply,
            "replied_at": _when(self.replied_at),
            "sent_to": self.sent_to,
            "reason": self.reason,
            "attempts": self.attempts,
            "accepted_at": _when(self.accepted_at),
            "last_change": _when(self.last_change),
            "source": self.source,
            "row": self.row,
        }
        return {**fixed, **{f"export: {k}": v for k, v in self.contact.items()}}


def reject_rows(
    rejects: Sequence[Reject], contact: Mapping[tuple[str, int], Mapping[str, str]]
) -> list[ReportRow]:
    """Rows never sent to because their address is not one: they need a phone call too."""
    return [
        ReportRow(
            "invalid address",
            r.value,
            "",
            r.reason,
            0,
            None,
            None,
            r.source,
            r.row,
            contact.get((r.source, r.row), {}),
        )
        for r in rejects
    ]


def ordered(rows: Sequence[ReportRow]) -> list[ReportRow]:
    """Who waits for an answer first, then the unreachable, then not yet delivered, then
    delivered; source order within."""
    rank = {outcome: n for n, outcome in enumerate(OUTCOME_ORDER)}
    return sorted(rows, key=lambda r: (rank[r.outcome], r.source, r.row))


def counts(rows: Sequence[ReportRow]) -> dict[str, int]:
    """How many customers ended in each outcome; waiting for an answer only when any do."""
    found = {outcome: 0 for outcome in OUTCOME_ORDER if outcome != AWAITING_ANSWER}
    if any(row.reply for row in rows):
        found = {AWAITING_ANSWER: 0, **found}
    for row in rows:
        found[row.outcome] += 1
    return found


def write_csv(rows: Sequence[ReportRow], out: IO[str]) -> None:
    """One line per customer; export columns are prefixed 'export: '."""
    records = [row.as_dict() for row in rows]
    header = _header(records)
    writer = csv_writer(out)
    writer.writerow(header)
    writer.writerows([record.get(name, "") for name in header] for record in records)


def write_report(rows: Sequence[ReportRow], path: Path, *, html_title: str | None) -> None:
    """The report as a file: HTML when it has a title, else CSV (with a BOM, for Excel)."""
    if html_title is None:
        with open_csv(path) as out:
            write_csv(rows, out)
        return
    with _open_output(path, encoding="utf-8") as out:
        write_html(rows, out, title=html_title)


def write_html(rows: Sequence[ReportRow], out: IO[str], *, title: str) -> None:
    """A standalone page: the counts, then one table row per customer (autoescaped)."""
    records = [row.as_dict() for row in rows]
    header = _header(records)
    summary = ", ".join(f"{n} {outcome}" for outcome, n in counts(rows).items())
    out.write(
        '<!doctype html><html><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td,th{border:1px solid #ccc;padding:2px 6px}"
        "table{border-collapse:collapse}tr.unreachable{background:#fee}"
        "tr.not-yet-delivered{background:#ffe}</style></head><body>"
        f"<h1>{html.escape(title)}</h1><p>{html.escape(summary)}</p><table><tr>"
    )
    out.write("".join(f"<th>{html.escape(name)}</th>" for name in header) + "</tr>\n")
    for record in records:
        css = str(record["outcome"]).replace(" ", "-")
        cells = "".join(f"<td>{html.escape(str(record.get(name, '')))}</td>" for name in header)
        out.write(f'<tr class="{css}">{cells}</tr>\n')
    out.write("</table></body></html>\n")


def _header(records: Sequence[Mapping[str, object]]) -> list[str]:
    extra = dict.fromkeys(k for record in records for k in record if k not in FIXED_COLUMNS)
    return [*FIXED_COLUMNS, *extra]


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else ""


# -- CSV files a spreadsheet opens safely ------------------------------------------------

_FORMULA_STARTS = frozenset("=+-@\t\r")  # OWASP: what makes a spreadsheet read a formula
_NUMBER = re.compile(r"[+-]?[0-9]+(?:[.,][0-9]+)*")


class SafeCsvWriter:
    """A csv writer whose text cells a spreadsheet never runs: one starting like a formula
    (=, +, -, @, tab, CR) gets a leading single quote, as OWASP's CSV injection advice says.
    A field in an export is whatever a customer once typed, e.g. =HYPERLINK(...)."""

    def __init__(self, out: IO[str]) -> None:
        self._writer = csv.writer(out)

    def writerow(self, row: Iterable[object]) -> None:
        self._writer.writerow(safe_cells(row))

    def writerows(self, rows: Iterable[Iterable[object]]) -> None:
        self._writer.writerows(safe_cells(row) for row in rows)


def safe_cells(row: Iterable[object]) -> list[object]:
    """The row with every text cell that starts like a formula quoted (a plain number such
    as -3.50 is no formula, and stays a number)."""
    return [
        "'" + c
        if isinstance(c, str) and c[:1] in _FORMULA_STARTS and not _NUMBER.fullmatch(c)
        else c
        for c in row
    ]


def csv_writer(out: IO[str]) -> SafeCsvWriter:
    """The writer for every CSV notify writes."""
    return SafeCsvWriter(out)


def open_csv(path: Path) -> IO[str]:
    """A CSV file to write: UTF-8 with a byte-order mark, which Excel needs to see UTF-8."""
    return _open_output(path, encoding="utf-8-sig", newline="")


def _open_output(path: Path, *, encoding: str, newline: str | None = None) -> IO[str]:
    try:
        return path.open("w", encoding=encoding, newline=newline)
    except OSError as exc:
        raise OutputError(
            f"cannot write {path}: {_os_reason(exc, path)}; {_os_fix(exc)}", path=str(path)
        ) from exc


def _os_reason(exc: OSError, path: Path) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"folder {path.parent} does not exist"
    if isinstance(exc, NotADirectoryError):
        return "a part of the path is a file, not a folder"
    return exc.strerror or str(exc)


def _os_fix(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "create the folder or choose another path"
    if isinstance(exc, PermissionError):
        return "choose a path you may write to"
    return "choose another path"


# -- the files `check` writes -----------------------------------------------------------


def write_rejects(cleaned: CleanResult, path: Path) -> None:
    """Every row not sent to, with where it is and why, for the operator to fix or accept."""
    with open_csv(path) as out:
        writer = csv_writer(out)
        writer.writerow(["source", "row", "column", "value", "reason"])
        writer.writerows((r.source, r.row, r.column, r.value, r.reason) for r in cleaned.rejects)


def write_review(cleaned: CleanResult, path: Path) -> None:
    """Addresses sent to (or held back) and rows that a person should glance at."""
    with open_csv(path) as out:
        writer = csv_writer(out)
        writer.writerow(["email", "kind", "detail", "source", "row"])
        writer.writerows((e.email, e.kind, e.detail, e.source, e.row) for e in cleaned.review)


def write_lookalikes(cleaned: CleanResult, path: Path) -> None:
    """Pairs of distinct recipients that might be one person, never merged."""
    with open_csv(path) as out:
        writer = csv_writer(out)
        writer.writerow(["first", "second", "reason"])
        writer.writerows((pair.first, pair.second, pair.reason) for pair in cleaned.lookalikes)


def flagged_rows(review: Sequence[Review], *, limit: int = 10) -> list[str]:
    """For `check`: per kind of row-level note, the rows to look at ("data/x.csv rows 3, 7")."""
    rows: dict[str, dict[str, list[int]]] = {}
    for entry in review:
        if entry.kind in ROW_KINDS:
            rows.setdefault(entry.kind, {}).setdefault(entry.source, []).append(entry.row)
    lines = []
    for kind, by_source in rows.items():
        places = "; ".join(
            f"{source} row{'s' if len(numbers) > 1 else ''} {_listed(numbers, limit)}"
            for source, numbers in by_source.items()
        )
        lines.append(f"{ROW_KINDS[kind]}: {places}")
    return lines


def _listed(numbers: list[int], limit: int) -> str:
    shown = ", ".join(str(n) for n in numbers[:limit])
    return shown + (f" and {len(numbers) - limit} more" if len(numbers) > limit else "")

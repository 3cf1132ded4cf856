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
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import IO

from notify import pages
from notify.cleaning.clean import BIDI_CONTROL, LEGACY_ENCODING
from notify.errors import OutputError
from notify.models import CleanResult, Reject, RejectKind, Review, State
from notify.pages import charts

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
    "name",
    "phone",
    "account",
    "reason",
    "server_said",
    "email",
    "reply",
    "replied_at",
    "sent_to",
    "items",
    "state",
    "attempts",
    "accepted_at",
    "last_change",
    "source",
    "row",
]
# Which export column holds a customer's name, phone, account: the first whose header
# holds one of these words (lower case, spaces and underscores alike).
CONTACT_WORDS = {
    "name": ("name", "customer", "contact"),
    "phone": ("phone", "tel", "mobile", "cell"),
    "account": ("account", "customer id", "customer no", "customer number", "client id"),
}
# The server's words, read for what they mean: the first match wins.
PLAIN_REASONS = [
    (
        re.compile(
            r"\b5\.1\.[01]\b|no such (user|mailbox)|user unknown|unknown user|does not exist"
            r"|mailbox unavailable|recipient rejected",
            re.I,
        ),
        "no such mailbox",
    ),
    (
        re.compile(r"\b5\.1\.2\b|host not found|domain not found|no such domain", re.I),
        "no such domain",
    ),
    (
        re.compile(
            r"\b[45]\.2\.2\b|quota|mailbox (is )?full|over ?quota|insufficient storage", re.I
        ),
        "mailbox full",
    ),
    (re.compile(r"\b5\.7\.\d+\b|policy|spam|blocked|blacklist|denied", re.I), "refused by policy"),
]
STATE_WORDS = {
    State.ACCEPTED.value: "delivered",
    State.PENDING.value: "not sent yet",
    State.SENDING.value: "being sent",
    State.DEFERRED.value: "server asked to try later",
    State.REFUSED.value: "refused by the server",
    State.SOFT_BOUNCED.value: "bounced for now; will be sent again",
    State.HARD_BOUNCED.value: "bounced for good",
    State.ALTERNATE.value: "bounced; going to their other address",
    State.BLOCKED.value: "refused by policy",
    State.GAVE_UP.value: "kept failing; gave up",
    State.SUPPRESSED.value: "bounced in an earlier incident; not sent",
}


@dataclass(frozen=True)
class ReportRow:
    """One affected customer: what happened, and their export row for a follow-up."""

    state: str  # a State value, or "invalid address" for a row never sent to
    email: str
    sent_to: str
    reason: str  # the server's words (or why a row was not sent to)
    attempts: int
    accepted_at: datetime | None
    last_change: datetime | None
    source: str
    row: int  # the customer's first export row
    contact: Mapping[str, str]  # every column of that export row
    items: int = 1  # how many export rows (orders, items) are theirs
    reply: str = ""  # the first lines of the customer's reply that waits for an answer
    replied_at: datetime | None = None

    @property
    def outcome(self) -> str:
        return AWAITING_ANSWER if self.reply else OUTCOMES.get(self.state, NOT_YET)

    @property
    def plain_reason(self) -> str:
        """What happened, in the words one says on the phone."""
        if self.state == "invalid address":
            kind = self.reason.split(":")[0]
            return {
                RejectKind.NO_ADDRESS.value: "no address in the export",
                RejectKind.TYPO_DOMAIN.value: "likely typo in the address; held back",
            }.get(kind, "invalid address")
        if self.state not in (State.ACCEPTED.value, State.PENDING.value):
            for pattern, words in PLAIN_REASONS:
                if pattern.search(self.reason):
                    return words
        return STATE_WORDS.get(self.state, self.state)

    def contact_value(self, what: str) -> str:
        """The export's name, phone or account for this customer, guessed from the headers."""
        for header, value in self.contact.items():
            words = header.lower().replace("_", " ").replace("-", " ")
            if any(word in words for word in CONTACT_WORDS[what]) and not (
                what == "name" and "@" in value
            ):
                return value
        return ""

    def as_dict(self) -> dict[str, object]:
        fixed = {
            "outcome": self.outcome,
            "name": self.contact_value("name"),
            "phone": self.contact_value("phone"),
            "account": self.contact_value("account"),
            "reason": self.plain_reason,
            "server_said": self.reason,
            "email": self.email,
            "reply": self.reply,
            "replied_at": _when(self.replied_at),
            "sent_to": self.sent_to,
            "items": self.items,
            "state": self.state,
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


def fold(rows: Sequence[ReportRow]) -> list[ReportRow]:
    """One row per customer: rows with the same address (or, with none, the same name and
    phone) become the first of them, counting the others as items."""
    first: dict[tuple[str, ...], ReportRow] = {}
    items: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = _customer(row)
        first.setdefault(key, row)
        items[key] = items.get(key, 0) + row.items
    return [replace(row, items=items[key]) for key, row in first.items()]


def _customer(row: ReportRow) -> tuple[str, ...]:
    if row.email.strip():
        return ("email", row.email.strip().lower())
    name, phone = row.contact_value("name"), row.contact_value("phone")
    if name or phone:
        return ("contact", name.lower(), phone)
    return ("row", row.source, str(row.row))


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


def write_report(
    rows: Sequence[ReportRow],
    path: Path,
    *,
    html_title: str | None,
    history: charts.History | None = None,
) -> None:
    """The report as a file: HTML when it has a title, else CSV (with a BOM, for Excel)."""
    if html_title is None:
        with open_csv(path) as out:
            write_csv(rows, out)
        return
    with _open_output(path, encoding="utf-8") as out:
        write_html(rows, out, title=html_title, history=history)


def write_html(
    rows: Sequence[ReportRow],
    out: IO[str],
    *,
    title: str,
    history: charts.History | None = None,
) -> None:
    """A standalone page: the numbers, an outcome bar and a timeline, then one row per
    customer, the unreachable first (autoescaped)."""
    found = counts(rows)
    pages.stream(
        "report.html.j2",
        out,
        title=title,
        counts=found,
        total=len(rows),
        bar=charts.outcome_bar(found),
        timeline=charts.timeline(history or charts.History()),
        rows=[(row, row.as_dict(), row.outcome.replace(" ", "-")) for row in rows],
        accounts=any(row.contact_value("account") for row in rows),
    )


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

"""What an operator reads: the outcome report, and the files `check` writes beside it.

The report lists every recipient's outcome, the unreachable first, with whatever else
the export knows. Pure: rows in, rows out, then written as CSV or HTML. Someone will
phone the people at the top of this list, so each row carries every column of the
customer's export row (phone, account id) next to what happened and when.
"""

from __future__ import annotations

import csv
import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO

from notify.models import CleanResult, Reject, State

# What each final state means for the operator, in the order the report lists them.
UNREACHABLE = "unreachable"  # needs a personal follow-up
NOT_YET = "not yet delivered"  # notify is still on it (or a send is owed)
DELIVERED = "delivered"
OUTCOME_ORDER = (UNREACHABLE, NOT_YET, DELIVERED)
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
FIXED_COLUMNS = [
    "outcome",
    "state",
    "email",
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

    @property
    def outcome(self) -> str:
        return OUTCOMES.get(self.state, NOT_YET)

    def as_dict(self) -> dict[str, object]:
        fixed = {
            "outcome": self.outcome,
            "state": self.state,
            "email": self.email,
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
    """Unreachable first, then not yet delivered, then delivered; source order within."""
    rank = {outcome: n for n, outcome in enumerate(OUTCOME_ORDER)}
    return sorted(rows, key=lambda r: (rank[r.outcome], r.source, r.row))


def counts(rows: Sequence[ReportRow]) -> dict[str, int]:
    """How many customers ended in each outcome."""
    found = {outcome: 0 for outcome in OUTCOME_ORDER}
    for row in rows:
        found[row.outcome] += 1
    return found


def write_csv(rows: Sequence[ReportRow], out: IO[str]) -> None:
    """One line per customer; export columns are prefixed 'export: '."""
    records = [row.as_dict() for row in rows]
    header = _header(records)
    writer = csv.DictWriter(out, fieldnames=header, restval="")
    writer.writeheader()
    writer.writerows(records)


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


# -- the files `check` writes -----------------------------------------------------------


def write_rejects(cleaned: CleanResult, path: Path) -> None:
    """Every row not sent to, with where it is and why, for the operator to fix or accept."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["source", "row", "column", "value", "reason"])
        writer.writerows((r.source, r.row, r.column, r.value, r.reason) for r in cleaned.rejects)


def write_review(cleaned: CleanResult, path: Path) -> None:
    """Addresses sent to (or held back) that a person should glance at."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["email", "kind", "detail", "source", "row"])
        for entry in cleaned.review:
            writer.writerow([entry.email, entry.kind, entry.detail, entry.source, entry.row])


def write_lookalikes(cleaned: CleanResult, path: Path) -> None:
    """Pairs of distinct recipients that might be one person, never merged."""
    with path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["first", "second", "reason"])
        writer.writerows((pair.first, pair.second, pair.reason) for pair in cleaned.lookalikes)

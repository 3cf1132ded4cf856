"""Turn raw export rows into recipients: trim, validate, merge by address, flag look-alikes.

Pure: takes a DataFrame and the manifest's mapping, returns a CleanResult, changes nothing.
Rows merge only when their addresses are the same after normalisation; similar names or
addresses are listed for the operator and never merged.

Addresses are never corrected. An internationalised domain is sent in its ASCII form; a
non-ASCII local part is kept (it needs a relay offering SMTPUTF8). A likely typo of a
popular mail domain holds the address back (a reject) unless `allow_typo_domains`; typo
domains let through, role addresses and SMTPUTF8 addresses are listed for review, and so
are rows a source read with a guessed encoding and values holding bidirectional controls.
"""

from __future__ import annotations

import contextlib
import difflib
import gc
import itertools
import re
import unicodedata
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from notify.cleaning.addresses import check_address, needs_smtputf8, role_of, typo_of
from notify.cleaning.lookalikes import find_lookalikes
from notify.compose import HEADER_BREAKS
from notify.errors import SourceError
from notify.models import (
    NOTE_COLUMN,
    ORIGIN_COLUMNS,
    ROW_COLUMN,
    SOURCE_COLUMN,
    CleanResult,
    Recipient,
    Reject,
    RejectKind,
    Review,
)

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))
_BIDI = re.compile("[\u200e\u200f\u202a-\u202e\u2066-\u2069]")  # marks, embeddings, isolates
TYPO_DOMAIN, ROLE_ADDRESS, SMTPUTF8 = "typo domain", "role address", "SMTPUTF8"  # Review kinds
LEGACY_ENCODING, BIDI_CONTROL = "not UTF-8", "bidi control"  # Review kinds of one row
LINE_BREAK = "line break"  # Review kind: a header value held a line break or tab


def resolve_columns(
    available: Sequence[str], wanted: Mapping[str, str], *, where: str, section: str
) -> dict[str, str]:
    """Map each field to the export's real column name, forgiving case and spacing."""
    by_folded = {_fold_header(name): name for name in available}
    resolved = {}
    for field_name, column in wanted.items():
        # An exact name wins: 'Email' must not silently become a second 'email ' column.
        actual = column if column in available else by_folded.get(_fold_header(column))
        if actual is None:
            raise SourceError(
                f"{where} [{section}] {field_name} = {column!r}: the export has no such column"
                f"{_closest(column, available)}; fix the column name in [{section}]",
                column=column,
            )
        resolved[field_name] = actual
    return resolved


def clean(
    frame: pd.DataFrame,
    *,
    columns: Mapping[str, str],
    items: Mapping[str, str],
    where: str = "the manifest",
    allow_typo_domains: bool = False,
    header_fields: Collection[str] = ("name",),
) -> CleanResult:
    """Validate addresses and merge rows per recipient, keeping every row accounted for.
    `header_fields` are the fields whose values go into a header (the name, what the
    subject reads): a line break in one is listed for review."""
    rows_read = len(frame)
    with _collector_paused():
        keyed, rejects = _keyed_rows(
            frame, columns=columns, items=items, where=where, allow_typo_domains=allow_typo_domains
        )
        noted = row_reviews(keyed, frame.get(NOTE_COLUMN))
        recipients = group_rows(keyed)
        # The recipients hold what they need of the rows: unless the caller keeps the export,
        # it is freed here, before the look-alike search (the peak of memory).
        del frame
        return CleanResult(
            recipients=recipients,
            rejects=rejects,
            lookalikes=find_lookalikes(recipients),
            rows_read=rows_read,
            review=_review(
                recipients,
                rejects,
                allow_typo_domains=allow_typo_domains,
                header_fields=[f for f in columns if f in header_fields],
                header_items=[f for f in items if f in header_fields],
            )
            + noted,
        )


@dataclass
class KeyedRows:
    """Every row's cells and the recipient it belongs to: what grouping starts from."""

    fields: list[tuple[str, list[str]]]  # template field -> its cell in each row
    items: list[tuple[str, list[str]]]  # item field -> its cell in each row
    rows: list[int]  # source row numbers
    sources: list[str]
    row_keys: np.ndarray  # each row's key code; -1 for a rejected row
    keys: list[str]  # key code -> ledger key
    addresses: list[str]  # each row's address to send to ("" when rejected)


def _keyed_rows(
    frame: pd.DataFrame,
    *,
    columns: Mapping[str, str],
    items: Mapping[str, str],
    where: str,
    allow_typo_domains: bool,
) -> tuple[KeyedRows, list[Reject]]:
    """Trim the cells, validate each distinct address once, and key every row by it."""
    data_columns = [c for c in frame.columns if c not in ORIGIN_COLUMNS]
    field_columns = resolve_columns(data_columns, columns, where=where, section="columns")
    item_columns = resolve_columns(data_columns, items, where=where, section="group")
    email_column = field_columns["email"]
    cells = {c: _trim(frame[c]) for c in {*field_columns.values(), *item_columns.values()}}
    emails = cells[email_column]
    rows = frame[ROW_COLUMN].tolist()
    sources = frame[SOURCE_COLUMN].tolist()
    # Every distinct cell is checked once, and rows are grouped by key in numpy.
    cell_codes, distinct = pd.factorize(pd.Series(emails, dtype=object))
    verdicts = [check_address(raw, allow_typo_domains) for raw in distinct.tolist()]
    key_codes, keys = pd.factorize(
        pd.Series([v[0] if isinstance(v, tuple) else None for v in verdicts], dtype=object)
    )
    row_keys = key_codes[cell_codes]  # -1 for a rejected row
    rejects = [
        Reject(sources[i], rows[i], email_column, emails[i], str(verdicts[cell_codes[i]]))
        for i in np.flatnonzero(row_keys < 0).tolist()
    ]
    sendable = [v[1] if isinstance(v, tuple) else "" for v in verdicts]
    keyed = KeyedRows(
        [(name, cells[column]) for name, column in field_columns.items()],
        [(name, cells[column]) for name, column in item_columns.items()],
        rows,
        sources,
        row_keys,
        keys.tolist(),
        [sendable[code] for code in cell_codes.tolist()],
    )
    return keyed, rejects


def group_rows(keyed: KeyedRows) -> list[Recipient]:
    """One recipient per key, its rows merged in source order (the benchmark times this)."""
    groups = _rows_by_key(keyed.row_keys)
    merge = _Merger(keyed.fields, keyed.items, keyed.rows, keyed.sources)
    addresses = [keyed.addresses[indexes[0]] for indexes in groups]
    return merge(keyed.keys, addresses, groups)


def _rows_by_key(row_keys: np.ndarray) -> list[list[int]]:
    """For key 0, 1, 2, ...: the indexes of its rows, in source order."""
    order = np.argsort(row_keys, kind="stable")
    ordered = row_keys[order]
    first = int(np.searchsorted(ordered, 0))  # rejected rows (-1) sort first
    bounds = [first, *(np.flatnonzero(np.diff(ordered[first:])) + 1 + first).tolist(), len(order)]
    indexes = order.tolist()
    return [indexes[start:end] for start, end in itertools.pairwise(bounds) if start < end]


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Creating millions of dicts and lists runs Python's cycle collector again and again
    over every object alive (a third of the time of a million-row export). Nothing built
    here forms a cycle, so it waits until the result is made."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Merger:
    """Makes one recipient from the rows that share an address, in source order."""

    def __init__(
        self,
        fields: list[tuple[str, list[str]]],
        items: list[tuple[str, list[str]]],
        rows: list[int],
        sources: list[str],
    ) -> None:
        self.fields, self.rows, self.sources = fields, rows, sources
        # Each row's item, made in one pass over the columns: half the cost of merging.
        # Without [group] items each row is still one (empty) item.
        names = [name for name, _ in items]
        self.items = (
            [
                {name: value for name, value in zip(names, values, strict=True) if value}
                for values in zip(*(cells for _, cells in items), strict=True)
            ]
            if items
            else [{} for _ in rows]
        )

    def __call__(
        self, keys: list[str], addresses: list[str], groups: list[list[int]]
    ) -> list[Recipient]:
        """One recipient per key, from its address and its rows' indexes. One loop with
        everything in locals: a million calls of a method cost a third more."""
        fields, items, rows, sources = self.fields, self.items, self.rows, self.sources
        field_count = len(fields)
        recipients: list[Recipient] = []
        append = recipients.append
        for key, address, indexes in zip(keys, addresses, groups, strict=True):
            first = indexes[0]
            merged: dict[str, Any] = {name: cells[first] for name, cells in fields if cells[first]}
            if len(indexes) == 1:
                merged["email"] = address
                one = Recipient(key, address, merged, [items[first]], [rows[first]], sources[first])
                append(one)
                continue
            if len(merged) < field_count:
                for name, cells in fields:  # the first non-empty value wins
                    merged.setdefault(name, next((cells[i] for i in indexes if cells[i]), ""))
                merged = {name: value for name, value in merged.items() if value}
            merged["email"] = address
            append(
                Recipient(
                    key,
                    address,
                    merged,
                    [items[i] for i in indexes],
                    [rows[i] for i in indexes],
                    sources[first],
                )
            )
        return recipients


def _trim(column: pd.Series) -> list[str]:
    """Strip each cell, and drop invisible characters (only non-ASCII cells can hold them)."""
    return [
        (value if value.isascii() else value.translate(_INVISIBLE)).strip()
        for value in column.astype(str).tolist()
    ]


def row_reviews(keyed: KeyedRows, notes: pd.Series | None) -> list[Review]:
    """Rows to look at before they go: a line that was not UTF-8 like the rest of its file
    (the source noted it), and values holding bidirectional controls, which can make a name
    display in another order. Both are sent all the same."""
    emails = dict(keyed.fields)["email"]
    review = [
        Review(keyed.addresses[i] or emails[i], LEGACY_ENCODING, note, keyed.sources[i], row)
        for i, (row, note) in enumerate(zip(keyed.rows, _notes(notes), strict=False))
        if note
    ]
    seen: set[tuple[int, str]] = set()
    for name, cells in [*keyed.fields, *keyed.items]:
        for i in [i for i, value in enumerate(cells) if not value.isascii()]:
            found = _BIDI.search(cells[i])
            recipient = int(keyed.row_keys[i])
            if found is None or recipient < 0 or (recipient, name) in seen:
                continue
            seen.add((recipient, name))
            detail = (
                f"{name} holds U+{ord(found[0]):04X} {unicodedata.name(found[0])}, which can "
                "make it display in another order; sent as it is"
            )
            review.append(
                Review(keyed.addresses[i], BIDI_CONTROL, detail, keyed.sources[i], keyed.rows[i])
            )
    return review


def _notes(notes: pd.Series | None) -> list[str]:
    return [] if notes is None else notes.astype(str).tolist()


def _review(
    recipients: Sequence[Recipient],
    rejects: Sequence[Reject],
    *,
    allow_typo_domains: bool,
    header_fields: Sequence[str] = (),
    header_items: Sequence[str] = (),
) -> list[Review]:
    """One line per address an operator should see: typo domains (held back or let
    through), role mailboxes, addresses that need a relay offering SMTPUTF8, and line
    breaks in the fields (or item fields) that go into a header."""
    review: list[Review] = []
    held: set[str] = set()
    for reject in rejects:
        if reject.kind is RejectKind.TYPO_DOMAIN and reject.value.lower() not in held:
            held.add(reject.value.lower())
            detail = "held back: " + reject.reason.partition(": ")[2]
            review.append(Review(reject.value, TYPO_DOMAIN, detail, reject.source, reject.row))
    for r in recipients:
        fix = typo_of(r.email.rpartition("@")[2]) if allow_typo_domains else None
        if fix is not None:
            detail = f"sent although it looks like {fix} (--allow-typo-domains)"
            review.append(Review(r.email, TYPO_DOMAIN, detail, r.source, r.first_row))
        role = role_of(r.email)
        if role is not None:
            review.append(Review(r.email, ROLE_ADDRESS, role, r.source, r.first_row))
        if needs_smtputf8(r.email):
            detail = "non-ASCII before the @: only a relay offering SMTPUTF8 takes it"
            review.append(Review(r.email, SMTPUTF8, detail, r.source, r.first_row))
        broken = _broken_header_fields(r, header_fields, header_items)
        if broken:
            detail = (
                f"line break or tab in {', '.join(broken)}: shown as one space in the "
                "header (the body keeps it)"
            )
            review.append(Review(r.email, LINE_BREAK, detail, r.source, r.first_row))
    return review


def _broken_header_fields(
    recipient: Recipient, fields: Sequence[str], items: Sequence[str]
) -> list[str]:
    """The header fields of one recipient that hold a line break or tab."""
    broken = [f for f in fields if _has_break(recipient.fields.get(f))]
    broken += [f for f in items if any(_has_break(item.get(f)) for item in recipient.items)]
    return broken


def _has_break(value: Any) -> bool:
    return isinstance(value, str) and not value.isprintable() and bool(HEADER_BREAKS.search(value))


def _fold_header(name: str) -> str:
    return " ".join(str(name).casefold().split())


def _closest(column: str, available: Sequence[str]) -> str:
    matches = difflib.get_close_matches(column, list(available), n=2, cutoff=0.5)
    if not matches:
        folded = {_fold_header(a): a for a in available}
        matches = [folded[m] for m in difflib.get_close_matches(_fold_header(column), folded)]
    if matches:
        return "; closest: " + ", ".join(repr(m) for m in matches)
    return "; it has: " + ", ".join(repr(a) for a in available[:12])

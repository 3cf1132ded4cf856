"""Turn raw export rows into recipients: trim, validate, merge by address, flag look-alikes.

Pure: takes a DataFrame and the manifest's mapping, returns a CleanResult, changes nothing.
Rows merge only when their addresses are the same after normalisation; similar names or
addresses are listed for the operator and never merged.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from notify.errors import SourceError
from notify.models import (
    ROW_COLUMN,
    SOURCE_COLUMN,
    CleanResult,
    LookAlike,
    Recipient,
    Reject,
)

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)
MAX_SAME_NAME = 20  # holders of one name listed as look-alikes, beyond which it is noise
_FULL_BUCKET = 30  # buckets up to this size are compared pairwise
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"))


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
) -> CleanResult:
    """Validate addresses and merge rows per recipient, keeping every row accounted for."""
    data_columns = [c for c in frame.columns if c not in (ROW_COLUMN, SOURCE_COLUMN)]
    field_columns = resolve_columns(data_columns, columns, where=where, section="columns")
    item_columns = resolve_columns(data_columns, items, where=where, section="group")
    email_column = field_columns["email"]
    trimmed = {
        column: _trim(frame[column]) for column in {*field_columns.values(), *item_columns.values()}
    }
    checked = _check_addresses(trimmed[email_column])
    recipients: dict[str, _Builder] = {}
    rejects: list[Reject] = []
    rows = frame[ROW_COLUMN].tolist()
    sources = frame[SOURCE_COLUMN].tolist()
    for index, raw_address in enumerate(trimmed[email_column]):
        verdict = checked[raw_address]
        if isinstance(verdict, str):
            rejects.append(Reject(sources[index], rows[index], email_column, raw_address, verdict))
            continue
        key, address = verdict
        fields = {name: trimmed[col][index] for name, col in field_columns.items()}
        item = {name: trimmed[col][index] for name, col in item_columns.items()}
        builder = recipients.get(key)
        if builder is None:
            recipients[key] = _Builder(key, address, sources[index])
            builder = recipients[key]
        builder.add(rows[index], fields, item)
    built = [builder.build() for builder in recipients.values()]
    return CleanResult(
        recipients=built,
        rejects=rejects,
        lookalikes=find_lookalikes(built),
        rows_read=len(frame),
    )


class _Builder:
    """Accumulates the rows of one recipient in source order."""

    def __init__(self, key: str, address: str, source: str) -> None:
        self.key, self.address, self.source = key, address, source
        self.fields: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.rows: list[int] = []

    def add(self, row: int, fields: dict[str, str], item: dict[str, str]) -> None:
        for name, value in fields.items():
            if value and name not in self.fields:  # first non-empty value wins
                self.fields[name] = value
        self.items.append({name: value for name, value in item.items() if value})
        self.rows.append(row)

    def build(self) -> Recipient:
        self.fields["email"] = self.address
        return Recipient(self.key, self.address, self.fields, self.items, self.rows, self.source)


def _trim(column: pd.Series) -> list[str]:
    return column.astype(str).str.translate(_INVISIBLE).str.strip().tolist()


def _check_addresses(addresses: list[str]) -> dict[str, tuple[str, str] | str]:
    """Each distinct address -> (ledger key, address to send to), or the reason it is invalid."""
    verdicts: dict[str, tuple[str, str] | str] = {}
    for raw in set(addresses):
        if not raw:
            verdicts[raw] = "no address"
            continue
        plain = plain_address(raw)
        if plain is not None:
            verdicts[raw] = (plain.lower(), plain)
            continue
        try:
            valid = validate_email(raw, check_deliverability=False)
        except EmailNotValidError as exc:
            verdicts[raw] = f"not a valid address: {exc}"
            continue
        address = valid.ascii_email or valid.normalized
        # lower(), not casefold(): casefold makes 'straße@' and 'strasse@' one recipient.
        verdicts[raw] = (valid.normalized.lower(), address)
    return verdicts


def plain_address(raw: str) -> str | None:
    """The normalised form of an everyday ASCII address, or None to ask email-validator.

    Most addresses are plain 'name@example.com'; checking those with one regex is ~20x
    cheaper than the full validator and gives the same answer (a test holds it to that)."""
    match = _PLAIN_ADDRESS.fullmatch(raw)
    if match is None or len(raw) > 254 or len(match["local"]) > 64:
        return None
    domain = match["domain"].lower()
    if "--" in domain or any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE):
        return None
    return f"{match['local']}@{domain}"


def find_lookalikes(recipients: Sequence[Recipient]) -> list[LookAlike]:
    """Pairs of distinct recipients an operator should glance at: the same name, names one
    edit apart, or addresses one edit apart (in the part before the @).

    Bounded for large exports: a name shared by many lists its first MAX_SAME_NAME holders,
    and two similar names are shown by one pair of their holders."""
    found: dict[tuple[str, str], LookAlike] = {}

    def add(a: Recipient, b: Recipient, reason: str) -> None:
        found.setdefault((a.key, b.key), LookAlike(a.email, b.email, reason))

    holders: dict[str, list[Recipient]] = {}
    for recipient in recipients:
        folded = _fold_name(str(recipient.fields.get("name", "")))
        if folded:
            holders.setdefault(folded, []).append(recipient)
    for group in holders.values():
        for other in group[1:MAX_SAME_NAME]:
            add(group[0], other, f"same name {group[0].fields.get('name')!r}")
    names = list(holders)
    for first, second in _near_pairs(names):
        a, b = holders[names[first]][0], holders[names[second]][0]
        add(a, b, f"similar names {a.fields.get('name')!r} and {b.fields.get('name')!r}")
    for first, second in _near_pairs([r.key for r in recipients], split_at="@"):
        add(recipients[first], recipients[second], "addresses one edit apart")
    for a, b in _near_domains(recipients):
        add(a, b, "addresses one edit apart")
    return list(found.values())


def _near_domains(recipients: Sequence[Recipient]) -> list[tuple[Recipient, Recipient]]:
    """The same local part at two domains one edit apart ('mary@exampel.com'): compared
    per distinct domain, so it stays cheap however many recipients there are."""
    by_domain: dict[str, dict[str, Recipient]] = {}
    for recipient in recipients:
        local, _, domain = recipient.key.rpartition("@")
        by_domain.setdefault(domain, {}).setdefault(local, recipient)
    domains = list(by_domain)
    pairs: list[tuple[Recipient, Recipient]] = []
    for first, second in _near_pairs(domains):
        one, other = by_domain[domains[first]], by_domain[domains[second]]
        pairs.extend((one[local], other[local]) for local in one.keys() & other.keys())
    return pairs


def _near_pairs(values: Sequence[str], *, split_at: str | None = None) -> list[tuple[int, int]]:
    """Index pairs (i < j) of distinct non-empty values exactly one edit apart.

    Two strings one edit apart always share a one-character deletion, so hashing every
    deletion and sorting finds the candidates in O(n·len) with compact arrays. With
    `split_at`, only the part before its last occurrence is edited (the local part)."""
    hashes = array("q")
    owners = array("q")
    for index, value in enumerate(values):
        if not value:
            continue
        head, tail = value, ""
        if split_at and split_at in value:
            cut = value.rindex(split_at)
            head, tail = value[:cut], value[cut:]
        variants = {value, *(head[:i] + head[i + 1 :] + tail for i in range(len(head)))}
        hashes.extend(hash(v) for v in variants)
        owners.extend([index] * len(variants))
    if not hashes:
        return []
    hash_array = np.frombuffer(hashes, dtype=np.int64)
    owner_array = np.frombuffer(owners, dtype=np.int64)
    order = np.argsort(hash_array, kind="stable")
    sorted_hashes = hash_array[order]
    starts = np.flatnonzero(np.r_[True, sorted_hashes[1:] != sorted_hashes[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_hashes)])
    pairs: set[tuple[int, int]] = set()
    for start, size in zip(starts[sizes > 1], sizes[sizes > 1], strict=True):
        group = sorted(set(owner_array[order[start : start + size]].tolist()))
        if len(group) > 1:
            _pairs_in(group, values, pairs)
    return sorted(pairs)


def _pairs_in(group: list[int], values: Sequence[str], pairs: set[tuple[int, int]]) -> None:
    """Verify candidates sharing a deletion; a huge bucket (a very common name) is checked
    against its first member only, so it stays linear."""
    anchors = group if len(group) <= _FULL_BUCKET else group[:1]
    for position, anchor in enumerate(anchors):
        for other in group[position + 1 :]:
            if values[anchor] != values[other] and _one_edit(values[anchor], values[other]):
                pairs.add((anchor, other))


def _one_edit(a: str, b: str) -> bool:
    """True when a and b differ by one substitution, insertion, deletion or transposition."""
    if abs(len(a) - len(b)) > 1:
        return False
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    ra, rb = a[prefix:], b[prefix:]
    return (
        ra[1:] == rb[1:]
        or ra[1:] == rb
        or ra == rb[1:]
        or (len(ra) >= 2 and ra[:2] == rb[1::-1] and ra[2:] == rb[2:])
    )


def _fold_name(name: str) -> str:
    """Compare names without case, accents or punctuation: 'Zoë  O'Brien' ~ 'zoe obrien'."""
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join("".join(c if c.isalnum() else " " for c in letters.casefold()).split())


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

"""Find distinct recipients an operator should glance at before sending: never merged.

Pairs are the same name, names one edit apart, or addresses one edit apart. "One edit"
is one substitution, insertion, deletion or swap of neighbours. Two strings one edit
apart always share a string made by deleting one character (or one is such a deletion
of the other), so every one-character deletion of every value is hashed, in numpy, and
the values sharing a hash are the candidates; each candidate pair is then verified.

Bounds, so a million-row export is checked in seconds and modest memory:

- a name shared by many recipients lists its first MAX_SAME_NAME holders;
- two similar names are shown by one pair of their holders;
- values sharing one deletion are compared with their next WINDOW neighbours only
  (every pair when at most WINDOW + 1 share it, which is all but freak cases);
- names and addresses longer than MAX_CHARS characters are left out of the one-edit
  search (an address that long is almost never seen).
"""

from __future__ import annotations

import itertools
import unicodedata
from collections.abc import Sequence

import numpy as np
import pandas as pd

from notify.models import LookAlike, Recipient

MAX_SAME_NAME = 20  # holders of one name listed as look-alikes, beyond which it is noise
WINDOW = 29  # values sharing one deletion: each is compared with its next WINDOW
MAX_CHARS = 100  # longer values are not searched for one-edit neighbours
_CHUNK = 8_192  # values hashed at a time: keeps the (chunk x length) arrays small
_BASE = 0x9E3779B97F4A7C15  # odd, so it has an inverse modulo 2**64
_INVERSE = pow(_BASE, -1, 2**64)
_ASCII_FOLD = str.maketrans(
    {chr(c): (chr(c).lower() if chr(c).isalnum() else " ") for c in range(128)}
)


def find_lookalikes(recipients: Sequence[Recipient]) -> list[LookAlike]:
    """Pairs of distinct recipients an operator should glance at: the same name, names one
    edit apart, or addresses one edit apart (before the @, or the same local part at two
    domains one edit apart)."""
    found: dict[tuple[int, int], LookAlike] = {}

    def add(first: int, second: int, reason: str) -> None:
        first, second = min(first, second), max(first, second)  # in source order
        found.setdefault((first, second), LookAlike(emails[first], emails[second], reason))

    emails = [r.email for r in recipients]
    names = [str(r.fields.get("name", "")) for r in recipients]
    holders, folded = _holders_by_name(names)
    for group in holders:
        for other in group[1:MAX_SAME_NAME]:
            add(group[0], other, f"same name {names[group[0]]!r}")
    for one, other in near_pairs(folded):
        first, second = holders[one][0], holders[other][0]
        add(first, second, f"similar names {names[first]!r} and {names[second]!r}")
    keys = [r.key for r in recipients]
    for first, second in near_pairs(keys, split_at="@"):
        add(first, second, "addresses one edit apart")
    for first, second in _near_domains(keys):
        add(first, second, "addresses one edit apart")
    return list(found.values())


def _holders_by_name(names: list[str]) -> tuple[list[list[int]], list[str]]:
    """Recipients grouped by folded name (each group in order), and the folded names."""
    cache: dict[str, str] = {}
    folded = [cache.get(name) or cache.setdefault(name, fold_name(name)) for name in names]
    codes, distinct = pd.factorize(pd.Series(folded, dtype=object))
    del cache, folded
    order = np.argsort(codes, kind="stable")
    bounds = np.flatnonzero(np.diff(codes[order], prepend=-1, append=len(distinct))).tolist()
    indexes = order.tolist()
    groups = [indexes[start:end] for start, end in itertools.pairwise(bounds)]
    named = [i for i, name in enumerate(distinct.tolist()) if name]
    return [groups[i] for i in named], [distinct[i] for i in named]


def _near_domains(keys: list[str]) -> list[tuple[int, int]]:
    """The same local part at two domains one edit apart ('mary@exampel.com'): domains
    compared once each, so it stays cheap however many recipients there are."""
    domains = list(dict.fromkeys(key.rpartition("@")[2] for key in keys))
    near = near_pairs(domains)
    if not near:
        return []
    involved = {domains[i] for pair in near for i in pair}
    by_domain: dict[str, dict[str, int]] = {}
    for index, key in enumerate(keys):
        local, _, domain = key.rpartition("@")
        if domain in involved:
            by_domain.setdefault(domain, {}).setdefault(local, index)
    pairs: list[tuple[int, int]] = []
    for one, other in near:
        first, second = by_domain[domains[one]], by_domain[domains[other]]
        pairs.extend((first[local], second[local]) for local in first.keys() & second.keys())
    return pairs


def near_pairs(values: Sequence[str], *, split_at: str | None = None) -> list[tuple[int, int]]:
    """Index pairs (i < j) of distinct non-empty values exactly one edit apart. With
    `split_at`, only the part before its last occurrence is edited (the local part)."""
    owners = np.array([i for i, v in enumerate(values) if 0 < len(v) <= MAX_CHARS], dtype=np.int64)
    if len(owners) < 2:
        return []
    owners = owners[np.argsort([len(values[i]) for i in owners.tolist()], kind="stable")]
    kept = [values[i] for i in owners.tolist()]  # by length: each chunk's array is narrow
    edited = [len(v) if split_at is None else v.rfind(split_at) % (len(v) + 1) for v in kept]
    packed = _variant_hashes(kept, np.array(edited))
    packed.sort()
    candidates = owners[_candidates(packed, len(kept).bit_length())]
    return sorted(
        (first, second) if first < second else (second, first)
        for first, second in candidates.tolist()
        if values[first] != values[second]
        and _one_edit(values[first], values[second])
        and (split_at is None or _tail(values[first], split_at) == _tail(values[second], split_at))
    )


def _tail(value: str, split_at: str) -> str:
    return value[value.rfind(split_at) % (len(value) + 1) :]


def _variant_hashes(values: list[str], edited: np.ndarray) -> np.ndarray:
    """The hash of each value and of each deletion of one of its first `edited` characters;
    the low bits (enough for len(values)) replaced by the value's index."""
    bits = np.uint64(len(values).bit_length())
    # At most one variant per character plus the value itself; pages never written to
    # are never resident, so the bound costs nothing.
    packed = np.empty(sum(map(len, values)) + len(values), dtype=np.uint64)
    filled = 0
    for start in range(0, len(values), _CHUNK):
        hashes, indexes = _chunk_variants(
            values[start : start + _CHUNK], edited[start : start + _CHUNK]
        )
        packed[filled : filled + len(hashes)] = ((hashes >> bits) << bits) | (
            indexes + np.uint64(start)
        )
        filled += len(hashes)
    return packed[:filled]


def _chunk_variants(chunk: list[str], edited: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(variant hashes, index in chunk of the value each comes from), by polynomial
    hashing of the code points: deleting one is a prefix sum plus a shifted suffix sum."""
    text = np.array(chunk, dtype=str)
    width = text.dtype.itemsize // 4
    codes = text.view(np.uint32).reshape(len(chunk), width).astype(np.uint64)
    powers = np.ones(width, dtype=np.uint64)
    powers[1:] = np.cumprod(np.full(width - 1, _BASE, dtype=np.uint64))
    prefix = np.zeros((len(chunk), width + 1), dtype=np.uint64)
    np.cumsum(codes * powers, axis=1, out=prefix[:, 1:])
    whole = prefix[:, -1]
    # Deleting character i: the prefix before it, plus the rest shifted down one power.
    deletions = prefix[:, :-1] + (whole[:, None] - prefix[:, 1:]) * np.uint64(_INVERSE)
    keep = np.arange(width) < edited[:, None]
    keep[:, 1:] &= codes[:, 1:] != codes[:, :-1]  # 'anna': deleting either n is one variant
    rows = np.nonzero(keep)[0]
    hashes = np.concatenate([deletions[keep], whole])
    indexes = np.concatenate([rows, np.arange(len(chunk))]).astype(np.uint64)
    return hashes, indexes


def _candidates(packed: np.ndarray, owner_bits: int) -> np.ndarray:
    """Distinct (i, j), i < j, of values sharing a variant hash, WINDOW apart at most."""
    limit = np.uint64(1 << owner_bits)  # two entries share a hash when their XOR is below
    next_same = np.empty(len(packed) - 1, dtype=bool)
    for start in range(0, len(next_same), _CHUNK * 32):  # in blocks: no full-size temporaries
        end = min(start + _CHUNK * 32, len(next_same))
        np.less(packed[start + 1 : end + 1] ^ packed[start:end], limit, out=next_same[start:end])
    starts = np.flatnonzero(next_same)  # positions whose next neighbour shares the hash
    found = []
    for distance in range(1, WINDOW + 1):
        if not len(starts):
            break
        first = (packed[starts] & (limit - np.uint64(1))).astype(np.int64)
        second = (packed[starts + distance] & (limit - np.uint64(1))).astype(np.int64)
        found.append(np.minimum(first, second) << 32 | np.maximum(first, second))
        starts = starts[starts + distance < len(next_same)]
        starts = starts[next_same[starts + distance]]  # still in the same run one step on?
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.sort(np.concatenate(found))
    codes = codes[np.r_[True, codes[1:] != codes[:-1]]]  # np.unique hashes: 20x slower
    pairs = np.stack([codes >> 32, codes & 0xFFFFFFFF], axis=1)
    return pairs[pairs[:, 0] != pairs[:, 1]]


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


def fold_name(name: str) -> str:
    """Compare names without case, accents or punctuation: 'Zoë  O'Brien' ~ 'zoe obrien'."""
    if name.isascii():
        return " ".join(name.translate(_ASCII_FOLD).split())
    decomposed = unicodedata.normalize("NFKD", name)
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join("".join(c if c.isalnum() else " " for c in letters.casefold()).split())

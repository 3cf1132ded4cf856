"""Recipients and reasons read from the words of a bounce that has no delivery-status part.

qmail, Yahoo, older Exim, Gmail and Exchange write for people: the failed address on a
line of its own (``<a@b>:``, an indented ``a@b``) followed by the remote server's reply
(``Remote host said: 550 5.1.1 ...``, ``#550 5.1.1 RESOLVER.ADR.RecipNotFound ##``), and
the returned message pasted below a marker line. These shapes are read generically, not
per vendor, so a new wording of the same shape still parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from notify.bounces.dsn import Report, one_line

# Where the returned message starts in a text bounce (qmail and Yahoo, Exim, Exchange,
# Gmail, Sendmail and others).
_COPY_MARKER = re.compile(
    r"^.*(?:below this line is a copy of the message|this is a copy of the message"
    r"|original message headers:|-+ ?original message ?-+|original message follows"
    r"|undelivered message headers|the header of the original message)",
    re.IGNORECASE | re.MULTILINE,
)
_ADDRESS = r"[^\s<>()\[\]@,;:\"']+@[^\s<>()\[\]@,;:\"']+\.[^\s<>()\[\]@,;:\"'.]+"
# A failed address on a line of its own, or opening a line as '<a@b>: reason'.
_RECIPIENT_LINE = re.compile(
    rf"^[ \t]*(?:<({_ADDRESS})>:?[ \t]*$|({_ADDRESS}):?[ \t]*$|<({_ADDRESS})>:[ \t])",
    re.MULTILINE,
)
_PROSE_RECIPIENT = re.compile(rf"\bdelivered to <?({_ADDRESS})>? because", re.IGNORECASE)
# An SMTP reply: a 4xx/5xx code standing alone, up to the end of its line.
_REPLY = re.compile(r"(?<![\w.:/#-])#?([45][0-5]\d)(?=[ \t-])([^\n]*)")
_ENHANCED = re.compile(r"(?<![\w.])#?([245]\.\d{1,3}\.\d{1,3})(?!\.?\d)")
_QUOTED_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^<>\s]+>)", re.IGNORECASE | re.MULTILINE)
_CHUNK = 2000  # how far after an address its reason is looked for
_MAX_MENTIONS = 100  # a bounce names a handful of recipients; a list of thousands is cut


def split_returned(text: str) -> tuple[str, str]:
    """The bounce's own words, and the returned message pasted below them (if any)."""
    marker = _COPY_MARKER.search(text)
    return (text[: marker.start()], text[marker.end() :]) if marker else (text, "")


def quoted_message_ids(text: str) -> list[str]:
    """Message-ID headers of a returned message pasted as text."""
    return _QUOTED_MESSAGE_ID.findall(text)


def reports(text: str, *, failed: Iterable[str] = (), exclude: Iterable[str] = ()) -> list[Report]:
    """One report per failed address; X-Failed-Recipients (``failed``) wins over guessing."""
    named = _unique(failed)[:_MAX_MENTIONS]
    mentions = _mentions(text, named) if named else _guessed_mentions(text, set(exclude))
    mentions = mentions[:_MAX_MENTIONS]
    addresses = named or _unique(address for _, _, address in mentions)
    if not addresses:
        return [_report(None, [text])]
    return [_report(address, _chunks(text, mentions, address)) for address in addresses]


def _unique(addresses: Iterable[str]) -> list[str]:
    """Addresses in first-seen order, compared without case."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.strip().lower(), address.strip())
    return [address for address in seen.values() if address]


def _mentions(text: str, addresses: list[str]) -> list[tuple[int, int, str]]:
    """Every place the text names one of the given addresses: (start, end, address)."""
    lowered = text.lower()
    found = []
    for address in addresses:
        start = lowered.find(address.lower())
        while start >= 0:
            found.append((start, start + len(address), address))
            start = lowered.find(address.lower(), start + 1)
    return sorted(found)


def _guessed_mentions(text: str, exclude: set[str]) -> list[tuple[int, int, str]]:
    """Addresses in the positions bounces put failed recipients, minus our own addresses."""
    found = [
        (m.start(), m.end(), next(g for g in m.groups() if g))
        for m in _RECIPIENT_LINE.finditer(text)
    ]
    found += [(m.start(1), m.end(1), m[1]) for m in _PROSE_RECIPIENT.finditer(text)]
    return sorted(
        (start, end, address.rstrip("."))
        for start, end, address in found
        if not _ours(address.rstrip("."), exclude)
    )


def _ours(address: str, exclude: set[str]) -> bool:
    """The bounce's own addressees and the mail system's mailboxes are never the failure."""
    local = address.partition("@")[0].lower()
    return address.lower() in exclude or local in ("postmaster", "mailer-daemon")


def _chunks(text: str, mentions: list[tuple[int, int, str]], address: str) -> list[str]:
    """The text after each mention of an address, up to the next other address."""
    chunks = []
    for index, (_, end, named) in enumerate(mentions):
        if named.lower() != address.lower():
            continue
        stop = next((s for s, _, other in mentions[index + 1 :] if other != named), len(text))
        chunks.append(text[end : min(stop, end + _CHUNK)])
    return chunks or [text]


def _report(address: str | None, chunks: list[str]) -> Report:
    """The first chunk holding an SMTP reply says why; else the first line after the address."""
    for chunk in chunks:
        if reply := _REPLY.search(chunk):
            diagnostic = one_line(f"{reply[1]}{reply[2]}").rstrip(" #'")
            return Report(address, "failed", _enhanced(diagnostic) or _enhanced(chunk), diagnostic)
    first = next((line for line in chunks[0].splitlines() if line.strip(" :>")), "")
    return Report(address, "failed", _enhanced(chunks[0]), one_line(first.strip(" :>")))


def _enhanced(text: str) -> str | None:
    """The first enhanced status code (RFC 3463) in a piece of text."""
    match = _ENHANCED.search(text)
    return match[1] if match and match[1][0] in "45" else None

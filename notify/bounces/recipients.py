"""Where the words of a bounce name the recipients that failed.

Mail systems that write for people put a failed address in a few places, whatever their
wording: on a line of its own (``<a@b>:``, ``* a@b``, ``"a@b":``, ``>>> a@b <a@b>``),
opening a line before the reason (``a@b on Thu, ...``, ``a@b [User unknown]``), in an
SMTP reply or transcript (``554 <a@b>... User unknown``, ``RCPT TO:<a@b>``), after a
label (``Unknown user: a@b``, ``target mail address: a@b``) or in a sentence (``could
not be delivered to: <a@b>``). These shapes are read generically, not per vendor.

Our own addresses (the bounce's sender and addressee, the returned message's sender) are
never the failure. A line that holds nothing but an address is trusted even when that
address is also the bounce's addressee, since a self-addressed bounce says just that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# Bounded repeats keep the search linear on a long line without spaces.
ADDRESS = r"[^\s<>()\[\]@,;:\"'|/]{1,128}@[^\s<>()\[\]@,;:\"']{1,200}\.[^\s<>()\[\]@,;:\"'.]{1,63}"
_A = rf"<?({ADDRESS})>?"
# Shapes that only a failed recipient takes: trusted even for the bounce's own addressee.
_LINE_SHAPES = re.compile(
    rf"^[ \t]*(?:[*\->•]+[ \t]*)?\"?<?({ADDRESS})>?\"?[ \t]*(?::|\.\.\.)?[ \t]*$"  # alone
    rf"|^[ \t]*(?:>>>[ \t]*)?<({ADDRESS})>:?[ \t]"  # '<a@b>: reason' (Postfix, qmail)
    rf"|^[ \t]*(?:[*\->]+[ \t]*)?({ADDRESS})(?: <[^<>\s]{{1,200}}>)?[ \t]+(?:on |\[|\(|<"
    rf"|invalid|unknown|user|mailbox|error|failed|:)",  # 'a@b on <date>', 'a@b [reason]'
    re.MULTILINE | re.IGNORECASE,
)
# Shapes that other addresses take too: our own are left out.
_PROSE_SHAPES = re.compile(
    rf"^[ \t]*(?:<<<[ \t]*)?[45]\d\d[ -](?:[45]\.\d{{1,3}}\.\d{{1,3}}[ \t]+)?{_A}"  # 554 <a@b>...
    rf"|rcpt to:[ \t]*{_A}"
    rf"|\b(?:deliver(?:ed|ing|y)?|sen[dt]|transmitted|forwarded)"
    rf"(?: (?:of )?(?:your |the |this )?(?:mail|message|e-?mail))?(?: (?:to|for))?:?[ \t]*{_A}"
    rf"|^[^:\n]{{2,60}}(?<!from)(?<!sender)(?<!to)(?<!cc)(?<!-id)(?<!references):[ \t]*{_A}"
    rf"[ \t]*\)?\.?[ \t]*$"
    rf"|\b(?:recipient|addressee|user|mailbox)[ \t]+{_A}",
    re.MULTILINE | re.IGNORECASE,
)
# Where a text names the sender, so that address is never taken for a recipient.
_SENDER_SHAPES = re.compile(
    rf"(?:mail from:|envelope-from|envelope sender:?|return-path:|x-postfix-sender:"
    rf" rfc822;|^from:|\bfrom )[ \t]*{_A}",
    re.MULTILINE | re.IGNORECASE,
)
_PIPE = re.compile(r"^\s*(?:pipe to |save to )?[|/]")
_DAEMONS = ("mailer-daemon", "mailer_daemon", "mail-daemon")
_ROLE = ("postmaster", "post_master", *_DAEMONS)
MAX_MENTIONS = 100  # a bounce names a handful of recipients; a list of thousands is cut


def mentions(
    text: str, *, ours: Iterable[str] = (), addressees: Iterable[str] = ()
) -> list[tuple[int, int, str]]:
    """(start, end, address) of each failed recipient the text names, in order.

    ``ours`` are never a failure (our sending addresses); ``addressees`` (whom the bounce
    was sent to) only when a line holds nothing else."""
    never = {a.lower() for a in ours} | _senders(text)
    weak = never | {a.lower() for a in addressees}
    found = [(start, end, a) for start, end, a in _matches(_LINE_SHAPES, text) if _ok(a, never)]
    found += [
        (start, end, a)
        for start, end, a in _matches(_PROSE_SHAPES, text)
        if _ok(a, weak) and not a.lower().startswith(_ROLE)
    ]
    return sorted(found)[:MAX_MENTIONS]


def _matches(pattern: re.Pattern[str], text: str) -> list[tuple[int, int, str]]:
    """Each match's first non-empty group, with its place."""
    found = []
    for match in pattern.finditer(text):
        group = next((i for i, g in enumerate(match.groups(), 1) if g), 0)
        if group:
            found.append((match.start(group), match.end(group), clean(match[group])))
        if len(found) >= MAX_MENTIONS * 4:
            break
    return found


def _senders(text: str) -> set[str]:
    """Addresses the text names as the sender (MAIL FROM, envelope-from, From:)."""
    return {clean(m[1]).lower() for m in _SENDER_SHAPES.finditer(text)}


def _ok(address: str, excluded: set[str]) -> bool:
    """Not one of ours, not a mail system's own mailbox, not a program or a file."""
    local = address.partition("@")[0].lower()
    return address.lower() not in excluded and local not in _DAEMONS and not is_program(address)


def clean(address: str) -> str:
    """An address as named, without the punctuation that follows it in a sentence."""
    return address.strip().rstrip(".").strip("<>\"'")


def is_program(address: str | None) -> bool:
    """A pipe or a file ("|/usr/bin/x", "/var/mail/x"): a local delivery, not an address."""
    return bool(address) and bool(_PIPE.match(address or ""))


def unique(addresses: Iterable[str]) -> list[str]:
    """Addresses in first-seen order, compared without case."""
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.strip().lower(), address.strip())
    return [address for address in seen.values() if address]

"""What the words of a bounce say: who failed, the server's reply, and the SMTP command.

qmail, Yahoo, older Exim, Gmail, Exchange, sendmail and many more write for people: the
failed address (see ``recipients``) followed by the remote server's reply (``Remote host
said: 550 5.1.1 ...``, ``#550 5.1.1 RESOLVER.ADR.RecipNotFound ##``, a multi-line
``550-5.7.26 ...``), and the returned message pasted below a marker line. These shapes are
read generically, not per vendor, so a new wording of the same shape still parses.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from notify.bounces import recipients
from notify.bounces.dsn import Report, enhanced, one_line

# Where the returned message starts in a text bounce (qmail and Yahoo, Exim, Exchange,
# Gmail, Sendmail, DragonFly and others).
_COPY_MARKER = re.compile(
    r"^.{0,80}?(?:below this line is a copy of the message|this is a copy of (?:the|your) message"
    r"|original message headers:|-+ ?original message ?-+|original message follows"
    r"|undelivered message headers|the header of the original message|unsent message follows"
    r"|message headers follow|^original message:[ \t]*$|^bounced e-?mail:[ \t]*$"
    r"|returned message follows|^-+ ?(?:the )?original message)",
    re.IGNORECASE | re.MULTILINE,
)
_PASTED_HEADERS = re.compile(
    r"^(?:received|return-path|x-received|dkim-signature): ", re.IGNORECASE | re.MULTILINE
)
# An SMTP reply: a 4xx/5xx code standing alone, up to the end of its line.
_REPLY = re.compile(r"(?<![\w.:/#=-])#?([45][0-5]\d)(?=[ \t-])([^\n]*)")
_REPLY_LINE = re.compile(r"^[ \t]*(?:<<<[ \t]*)?[45]\d\d[ -]")
_CONTINUED = re.compile(r"^[ \t]*(?:<<<[ \t]*)?[45]\d\d[ -](?:[45]\.\d{1,3}\.\d{1,3}[ \t]+)?")
_TRANSCRIPT = re.compile(r"^[ \t]*(?:in|out):", re.IGNORECASE)  # Postfix's session transcript
_QUOTED_MESSAGE_ID = re.compile(r"^message-id:\s*(<[^<>\s]{1,250}>)", re.IGNORECASE | re.MULTILINE)
# The SMTP command a reply answered, as Postfix, Exim, sendmail, DragonFly and others say it.
_COMMANDS = (
    ("DATA", r"end of data|final data|\bdata command|after data\b|>>> data\b|our data\b"),
    ("RCPT", r"rcpt to|rcpt command|recipient command|>>> rcpt"),
    ("MAIL", r"mail from\b|mail command|>>> mail"),
    ("HELO", r"\b(?:helo|ehlo)\b"),
    ("CONNECT", r"refused to talk to me|initial connection|greeting|connect(?:ion)? to"),
)
_COMMAND = re.compile(
    r"(?:in reply to|after|did not like our|while (?:sending|talking)|>>>)"
    r"[^\n]{0,20}?(?:" + "|".join(f"(?P<{name}>{words})" for name, words in _COMMANDS) + ")"
    r"|(?P<CONNECT2>refused to talk to me)|(?P<HELO2>my name was rejected)"
    r"|(?P<MAIL2>but sender was rejected)|(?P<RCPT2>does not like recipient)"
    r"|(?P<DATA2>failed after i sent the message)",
    re.IGNORECASE,
)
_WARNING_SUBJECT = re.compile(
    r"\(delay\)|\bdelayed\b|delivery delay|warning: could not send message for past"
    r"|\bstill (?:trying|being retried)",
    re.IGNORECASE,
)
_WARNING_TEXT = re.compile(
    r"warning message only|will (?:continue|keep) (?:trying|to try|attempting)"
    r"|do not need to resend|delivery attempts will continue|has not yet been delivered"
    r"|has been delayed|message delayed|still (?:trying|being retried)|will be retried for",
    re.IGNORECASE,
)
_CHUNK = 2000  # how far after an address its reason is looked for
_MAX_CHUNKS = 4  # mentions of one address read for its reason
MAX_TEXT = 200_000  # a bounce's own words are a few KB; a hostile one is read this far


def split_returned(text: str) -> tuple[str, str]:
    """The bounce's own words, and the returned message pasted below them (if any)."""
    marker = _COPY_MARKER.search(text, 0, MAX_TEXT)
    if marker:
        return text[: marker.start()], text[marker.end() :]
    pasted = _PASTED_HEADERS.search(text, 0, MAX_TEXT)  # headers pasted with no marker line
    return (text[: pasted.start()], text[pasted.start() :]) if pasted else (text, "")


def quoted_message_ids(text: str) -> list[str]:
    """Message-ID headers of a returned message pasted as text."""
    return _QUOTED_MESSAGE_ID.findall(text, 0, MAX_TEXT)


def is_warning(subject: str, text: str) -> bool:
    """A "still trying" notice (Gmail and Zoho "(Delay)", Exim "message delayed")."""
    return bool(_WARNING_SUBJECT.search(subject) or _WARNING_TEXT.search(text, 0, MAX_TEXT))


def reports(
    text: str,
    *,
    failed: Iterable[str] = (),
    ours: Iterable[str] = (),
    addressees: Iterable[str] = (),
) -> list[Report]:
    """One report per failed address; X-Failed-Recipients (``failed``) wins over guessing."""
    text = text[:MAX_TEXT]
    named = recipients.unique(failed)[: recipients.MAX_MENTIONS]
    mentions = (
        _mentions(text, named)
        if named
        else recipients.mentions(text, ours=ours, addressees=addressees)
    )
    addresses = named or recipients.unique(address for _, _, address in mentions)
    if not addresses:
        return [_report(None, text[:_CHUNK])]
    if len(addresses) == 1:  # the words before the address are about it too
        preface = text[: mentions[0][0]][-_CHUNK:] if mentions else ""
        return [_report(addresses[0], context(text, addresses[0], mentions), preface)]
    return [_report(address, context(text, address, mentions)) for address in addresses]


def _mentions(text: str, addresses: list[str]) -> list[tuple[int, int, str]]:
    """Every place the text names one of the given addresses: (start, end, address)."""
    lowered = text.lower()
    found: list[tuple[int, int, str]] = []
    for address in addresses:
        start = lowered.find(address.lower())
        while start >= 0 and len(found) < recipients.MAX_MENTIONS * 4:
            found.append((start, start + len(address), address))
            start = lowered.find(address.lower(), start + 1)
    return sorted(found)


def context(text: str, address: str, mentions: list[tuple[int, int, str]] | None = None) -> str:
    """What the text says after an address: up to the next other address, or a bit more;
    the start of the text when it never names the address."""
    text = text[:MAX_TEXT]
    if mentions is None:
        mentions = _mentions(text, [address])
    wanted, chunks, length = address.lower(), [], 0
    for index, (_, end, named) in enumerate(mentions):
        if named.lower() != wanted:
            continue
        stop = min(end + _CHUNK, len(text))
        for start, _, other in mentions[index + 1 :]:
            if start >= stop or other.lower() != wanted:
                stop = min(stop, start)
                break
        chunks.append(text[end:stop])
        length += stop - end
        if length >= _CHUNK or len(chunks) >= _MAX_CHUNKS:
            break
    return "\n".join(chunks) if chunks else text[:_CHUNK]  # named nowhere: all is about it


def _report(address: str | None, chunk: str, preface: str = "") -> Report:
    """The SMTP reply after the address (or before it) says why; else the first line after."""
    diagnostic = smtp_reply(chunk) or smtp_reply(preface)
    if not diagnostic:
        first = next((line for line in chunk.splitlines() if line.strip(" :>.-")), "")
        diagnostic = one_line(first.strip(" :>"))
    status = enhanced(diagnostic) or enhanced(chunk)
    return Report(address, "failed", status, diagnostic, context=one_line(f"{chunk}\n{preface}"))


def smtp_reply(text: str) -> str:
    """The first SMTP reply in a text, with the lines it continues on, as one line."""
    reply = _REPLY.search(text)
    if not reply:
        return ""
    lines = [f"{reply[1]}{reply[2]}"]
    following = text[reply.end() :].split("\n")[1:12]
    for line in following:
        if not line.strip() or not (line[0] in " \t" or _REPLY_LINE.match(line)):
            break
        if _TRANSCRIPT.match(line):
            break
        lines.append(_CONTINUED.sub("", line) if _REPLY_LINE.match(line) else line)
    return one_line(" ".join(lines)).rstrip(" #'")


def command(text: str) -> str | None:
    """The SMTP command a reply answered ("RCPT", "DATA", ...), when the text says so."""
    match = _COMMAND.search(text[:MAX_TEXT])
    if not match:
        return None
    return (match.lastgroup or "").rstrip("2") or None

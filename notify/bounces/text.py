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
# A session transcript: ">>> RCPT To:<a@b>" sent, "<<< 550 ..." answered.
_SENT = re.compile(r">>>[ \t]*(mail from|rcpt to|data|helo|ehlo)\b", re.IGNORECASE)
_SENT_NAMES = {"mail": "MAIL", "rcpt": "RCPT", "data": "DATA", "helo": "HELO", "ehlo": "HELO"}
_REFUSAL = re.compile(r"<<<[ \t]*[45]\d\d\b")
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
_PUNCTUATION = " \t:>\"'.-*[]()"
_DATE_REST = re.compile(r"^\s*on \w{3},? ", re.IGNORECASE)  # Exchange's 'a@b on Thu, ...'
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
    single = len(addresses) == 1  # then the words before the address are about it too
    preface = text[: mentions[0][0]][-_CHUNK:] if single and mentions else ""
    return [
        _report(
            address, context(text, address, mentions), preface, _reply_line(text, mentions, address)
        )
        for address in addresses
    ]


def _reply_line(text: str, mentions: list[tuple[int, int, str]], address: str) -> str:
    """The SMTP reply an address is first named in ('554 <a@b>... Protocol error'), if any."""
    start = next((s for s, _, named in mentions if named.lower() == address.lower()), None)
    if start is None:
        return ""
    end = text.find("\n", start)
    line = text[text.rfind("\n", 0, start) + 1 : end if end >= 0 else len(text)]
    return line if _REPLY_LINE.match(line) else ""


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


def _report(address: str | None, chunk: str, preface: str = "", line: str = "") -> Report:
    """The SMTP reply naming the address, after it or before it says why; else the words
    after it, or the label before it ('Unknown user: a@b')."""
    diagnostic = smtp_reply(line) or smtp_reply(chunk) or smtp_reply(preface)
    diagnostic = diagnostic or _first_words(chunk) or _last_words(preface)
    status = enhanced(diagnostic) or enhanced(chunk)
    return Report(address, "failed", status, diagnostic, context=one_line(f"{chunk}\n{preface}"))


def _first_words(chunk: str) -> str:
    """The first line after an address that says something (not 'on <date>', not '":')."""
    for index, line in enumerate(chunk.splitlines()[:12]):
        words = line.strip(_PUNCTUATION)
        if (index or not _DATE_REST.match(line)) and sum(c.isalpha() for c in words) >= 3:
            return one_line(words)
    return ""


def _last_words(preface: str) -> str:
    """The last line before an address that says something ('Unknown user:')."""
    lines = [line.strip(_PUNCTUATION) for line in preface.splitlines()[-2:]]
    return one_line(next((w for w in reversed(lines) if sum(c.isalpha() for c in w) >= 3), ""))


def smtp_reply(text: str) -> str:
    """The first SMTP reply in a text, with the lines it continues on, as one line: the
    lines of a multi-line reply ('550-...') and the indented lines a report wraps it in."""
    reply = _REPLY.search(text)
    if not reply:
        return ""
    lines, more = [f"{reply[1]}{reply[2]}"], reply[2].startswith("-")
    for line in text[reply.end() : reply.end() + _CHUNK].split("\n")[1:12]:
        continued = _REPLY_LINE.match(line)
        if (
            not line.strip()
            or _TRANSCRIPT.match(line)
            or not (continued and more or line[0] in " \t")
        ):
            break
        if continued:
            more = continued[0].rstrip().endswith("-")
            line = _CONTINUED.sub("", line)
        lines.append(line)
    return one_line(" ".join(lines)).rstrip(" #'")


def command(text: str) -> str | None:
    """The SMTP command a reply answered ("RCPT", "DATA", ...), when the text says so: in a
    transcript, the last command sent before the first refusal."""
    text = text[:MAX_TEXT]
    if refusal := _REFUSAL.search(text):
        sent = [m for m in _SENT.finditer(text, 0, refusal.start())]
        if sent:
            return _SENT_NAMES.get(sent[-1][1].lower()[:4])
    match = _COMMAND.search(text)
    return (match.lastgroup or "").rstrip("2") or None if match else None

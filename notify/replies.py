"""What an SMTP reply or a DSN status means: for the run, and for the address.

`verdict` decides what delivery does next; `classify` decides what a refusal or a bounce
says about the address (hard, soft, the sender's problem). It names the reason first, in
the categories Sisimai uses (userunknown, mailboxfull, blocked, ...), then maps the reason
to a kind: wordings that name a cause win over the status code, the enhanced status code
(RFC 3463) wins over vague wordings, and the basic code is the last resort.

The 3-digit code says only "now" (2xx), "later" (4xx) or "never" (5xx); the enhanced
code's subject mostly says whose problem it is: x.7.x is policy and rate limiting, the
sender's problem, which calls for slowing down, not for giving up on the recipient, save
the few x.7.x codes about the recipient's own account (5.7.13 disabled, 5.7.17 moved).
Only the address's own faults are HARD, and a temporary (4xx) failure never is.
"""

from __future__ import annotations

import enum
import re

from notify.models import BounceKind, Outcome, State

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_BASIC = re.compile(r"^\s*#?([245])(\d\d)\b")
_IN_REPLY = re.compile(r"^\s*#?[245]\d\d[ -]#?([245])\.(\d{1,3})\.(\d{1,3})\b")
_RETRY_AFTER = re.compile(
    r"(?:retry|try again)\D{0,20}?(\d+(?:\.\d+)?)\s*(s|sec|secs|seconds?|m|mins?|minutes?)\b",
    re.IGNORECASE,
)


class Verdict(enum.Enum):
    """What delivery does next with a recipient after a reply."""

    DONE = "done"  # accepted, refused for good, or in doubt: record it and move on
    RETRY = "retry"  # this recipient's temporary failure: try again later in this run
    SLOW_DOWN = "slow down"  # the relay pushes back on us: pause, fewer connections, retry


def enhanced_status(reply: str) -> tuple[int, int, int] | None:
    """'4.7.1 Rate limited' -> (4, 7, 1); None when the reply has no enhanced code."""
    match = _ENHANCED.match(reply)
    return (int(match[1]), int(match[2]), int(match[3])) if match else None


def verdict(outcome: Outcome) -> Verdict:
    """The one place where replies turn into decisions."""
    if outcome.state in (State.ACCEPTED, State.REFUSED, State.SENDING, State.PENDING):
        return Verdict.DONE
    if outcome.code is None or outcome.code == 421:  # connection lost or closing
        return Verdict.SLOW_DOWN
    status = enhanced_status(outcome.reply)
    if status is not None and status[1] == 7:
        return Verdict.SLOW_DOWN
    return Verdict.RETRY


def is_status_code(text: str) -> bool:
    """'5.1.1' is an enhanced status code; '5.1' and '550' are not."""
    return _STATUS.match(text) is not None


def retry_after(reply: str) -> float | None:
    """Seconds the relay asked us to wait ('retry in 30 seconds', 'try again in 5 min')."""
    match = _RETRY_AFTER.search(reply)
    if not match:
        return None
    seconds = float(match[1])
    return seconds * 60 if match[2].lower().startswith("m") else seconds


# -- Reasons ------------------------------------------------------------------------------
# A reason is one of Sisimai's categories; its kind is what it means for the address.
_HARD, _SOFT, _SENDER = BounceKind.HARD, BounceKind.SOFT, BounceKind.SENDER
# fmt: off
KIND_OF_REASON: dict[str, BounceKind] = {
    # The address itself is bad: never retry it.
    **dict.fromkeys(
        ("userunknown", "hostunknown", "hasmoved", "notaccept", "suspend", "filtered"), _HARD
    ),
    # The mailbox or its system is unwell: retry later.
    **dict.fromkeys(
        ("mailboxfull", "systemerror", "systemfull", "networkerror", "expired", "mailererror"),
        _SOFT,
    ),
    # Ours to fix (policy, reputation, rate, content, size, protocol); never the address.
    **dict.fromkeys(
        (
            "blocked", "spamdetected", "policyviolation", "rejected", "securityerror",
            "toomanyconn", "speeding", "badreputation", "authfailure", "requireptr",
            "notcompliantrfc", "contenterror", "norelaying", "virusdetected", "syntaxerror",
            "mesgtoobig", "exceedlimit", "failedstarttls",
        ),
        _SENDER,
    ),
}
# fmt: on


def _words(*phrases: str) -> re.Pattern[str]:
    """One pattern for a reason's wordings, matched against lower-cased text (faster than
    re.IGNORECASE, which matters for a bounce naming a hundred recipients)."""
    return re.compile("|".join(phrases))


# Wordings that name a cause, and so win over the status code: "550 5.1.1 ... spam" is
# about us. The sender's causes come first: a refusal that blames our IP, our content or
# our rate is never read as a bad address, whatever else it says.
# fmt: off
_CAUSES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("virusdetected", _words(r"\bvirus", r"malware", r"\binfected\b", r"trojan")),
    ("spamdetected", _words(
        r"\bspam(?!haus|cop)", r"\bjunk mail", r"unsolicited", r"bulk (?:e-?)?mail",
        r"message (?:content )?(?:was )?(?:rejected|refused) (?:due to|as|because)",
        r"content (?:filter|rejected)", r"classified as", r"mail flood",
    )),
    ("authfailure", _words(
        r"\bdmarc\b", r"\bspf\b", r"\bdkim\b", r"unauthenticated (?:e-?)?mail",
        r"sender policy framework", r"(?:email|message) authentication",
    )),
    ("requireptr", _words(
        r"reverse[ -]?(?:dns|lookup|mapping|address)", r"\brdns\b", r"\bptr\b",
        r"unverif[iy]able sending ip", r"cannot find your hostname",
        r"(?:ip|address) (?:has no|without a?) (?:dns )?name", r"not resolv(?:e|able) your",
        r"hostname (?:does not|doesn't) match",
    )),
    ("badreputation", _words(r"reputation")),
    ("blocked", _words(
        r"black.?list", r"block.?list", r"\bdnsbl", r"\brbl\b", r"spamhaus", r"spamcop",
        r"client host (?:\[[^\]]*\] )?(?:rejected|blocked)", r"blocked using",
        r"(?:is|are|been|was|ip) listed (?:in|on|at|by) ", r"\bblocked\b", r"\bbanned\b",
        r"may not be mail exchanger",
        r"your (?:account|domain|ip|sending)[^.\n]{0,30}(?:suspended|disabled|blocked|banned)",
        r"(?:your|sender|sending|client|remote) (?:ip|host|server|network|mta)(?: address)?"
        r" (?:\S+ )?(?:is |has been |was )?(?:not allowed|rejected|refused|denied)",
        r"access (?:denied|refused).{0,40}\b(?:ip|client|host)\b", r"service refus",
        r"connection (?:rejected|refused) (?:by|from|due)", r"open relay",
        r"not (?:allowed|authori[sz]ed) to (?:send|connect)", r"(?:invalid|bad) ip\b",
        r"\b(?:host|network|ip|client)\b[^.\n]{0,20}\bnot allowed",
    )),
    ("norelaying", _words(
        r"relay(?:ing)? (?:access )?(?:denied|not (?:permitted|allowed)|prohibited|refused)",
        r"not configured to relay", r"unable to relay", r"(?:we|i) do not relay",
        r"not (?:permitted|allowed) to relay", r"relay not permitted",
    )),
    ("securityerror", _words(
        r"(?:smtp )?authentication (?:is )?required", r"without authentication",
        r"turn on smtp authentication", r"advertise auth",
    )),
    ("speeding", _words(
        r"too many (?:messages|mails|emails|errors|recipients|connections|sessions|concurrent)",
        r"rate.?limit", r"throttl", r"sending (?:quota|limit)", r"unusual rate",
        r"(?:receiving|sending) mail (?:at )?a rate", r"too fast", r"slow down",
        r"connection limit", r"exceeded the (?:rate|number of)",
    )),
    ("mesgtoobig", _words(
        r"message (?:is |was )?too (?:big|large)", r"too big for",
        r"(?:message|mail|file|email) size (?:limit |exceeds|too)",
        r"exceeds? (?:the )?(?:max(?:imum)?|allowed|fixed) (?:message )?size",
        r"size (?:limit )?exceeded", r"message length exceeds",
    )),
    ("rejected", _words(
        r"sender (?:address )?(?:rejected|denied|refused|blocked|not allowed|verify failed"
        r"|is not allowed|unknown|invalid|not found)",
        r"(?:mail from|envelope (?:sender|from)|from address|sender(?:'s)? (?:address|domain)"
        r"|domain of sender)[^.]{0,40}(?:rejected|refused|not (?:accepted|allowed|permitted"
        r"|found)|does ?n[o']t exist|invalid|denied|unknown|unverified)",
        r"(?:invalid|unverified|bad|unknown) sender", r"sender verif\w* fail",
        r"permission to post", r"not (?:a )?member of", r"only members", r"domain of sender",
        r"投稿する権限",
    )),
    ("mailboxfull", _words(
        r"mail ?box (?:is |was )?full", r"(?:mail ?box|inbox|folder) (?:is )?(?:over|exceed)",
        r"over ?quota", r"quota (?:exceeded|full|violation|reached)", r"exceeded .{0,20}quota",
        r"(?:disk|mailbox|storage|user) quota", r"insufficient (?:disk |storage )?space",
        r"exceeded storage allocation", r"too much mail data", r"full mailbox",
        r"mailbox (?:size )?limit", r"recipient'?s mailbox exceeded",
        r"not enough (?:storage|space)",
        r"boîte (?:aux lettres|de réception) pleine", r"postfach (?:ist )?voll",
        r"mailbox (?:has )?exceeded", r"user is over",
    )),
    ("suspend", _words(
        r"(?:account|mail ?box|user|address|recipient)(?: address)? (?:is |has been |was )?"
        r"(?:disabled|suspended|deactivated|inactive|frozen|locked|closed|not active|expired)",
        r"disabled (?:recipient|account|mailbox|user)", r"no longer (?:active|in use|available)",
        r"(?:inactive|suspended|expired|closed) (?:account|mailbox|user)",
        r"\b(?:temporar(?:y|ily) )?locked\b",
    )),
    ("hasmoved", _words(r"has moved", r"moved (?:permanently|away)", r"owner (?:has )?changed")),
    ("userunknown", _words(
        r"user unknown", r"unknown (?:user|recipient|local.?part|mailbox|alias|address|e-?mail)",
        r"no such (?:user|recipient|mailbox|address|person|account|local user)",
        r"(?:user|recipient|mailbox|address|account|addressee)(?: name)? (?:does not|doesn'?t"
        r"|did not|not|no longer) exists?",
        r"(?:user|recipient|mail ?box|address|account|addressee|userid)(?: name)? (?:was |is )?"
        r"(?:not (?:found|known|recognized|listed|valid)|invalid|unknown)",
        r"does not exist", r"doesn'?t exist", r"isn'?t a valid", r"not a valid (?:user|recipient"
        r"|mailbox|address)", r"invalid (?:recipient|mailbox|user|address|e-?mail|final delivery)",
        r"recip(?:ient)? ?not ?found", r"could(?:n'?t| not) be found", r"no (?:valid )?recipients",
        r"no mailbox (?:here|by that name|available|found)", r"mailbox not (?:found|present)",
        r"bad (?:destination )?(?:recipient|mailbox)", r"unrouteable address",
        r"not a (?:known|local|registered|valid) (?:user|address|recipient|gateway user)",
        r"address rejected: (?:access denied|invalid|unknown)", r"badrcptto", r"not our customer",
        r"utilisateur inconnu", r"nessun utente", r"no existe", r"unbekannt",
        r"name is not recognized", r"no one (?:at|by) (?:this|that)", r"no account by that name",
        r"not listed in (?:the )?(?:\w+ ){0,2}directory",
        r"(?<!ip )(?<!sender )(?:user|recipient|address)\b[^.\n]{0,60}?"
        r"\bnot (?:listed|found|known|recognized)",
        r"(?:user|recipient) doesn'?t have an? \S+ account",
    )),
    ("hostunknown", _words(
        r"host unknown", r"unknown host", r"(?:host|domain)(?: or domain)?(?: name)? not found",
        r"no such (?:domain|host)", r"domain (?:does not exist|not exist|is invalid|unknown)",
        r"unrouteable (?:mail )?domain", r"unknown domain", r"invalid domain",
        r"name or service not known", r"\bnxdomain\b", r"no mx (?:record|host)",
    )),
    ("notaccept", _words(
        r"(?:does not|doesn'?t|do not) accept (?:any )?(?:e-?)?mail", r"null mx",
        r"not accepting (?:network )?(?:messages|mail)", r"accepts no mail", r"no smtp service",
    )),
    ("failedstarttls", _words(
        r"starttls (?:is )?(?:required|failed)", r"must issue a starttls", r"tls (?:is )?required",
        r"requiretls", r"(?:failed|unable) to (?:negotiate|establish) tls",
    )),
    ("notcompliantrfc", _words(
        r"\brfc ?(?:5322|2822|822|5321|2821|1123)\b(?!;)", r"not (?:rfc|standards?).?compliant",
        r"multiple (?:from|to|subject|date|message-id) header", r"duplicate header",
    )),
    ("syntaxerror", _words(
        r"syntax error", r"bad sequence of commands", r"malformed address",
        r"command (?:not )?(?:unrecognized|recognized|implemented)", r"protocol error",
        r"parameter not implemented", r"need rcpt",
    )),
    ("systemfull", _words(r"system (?:is )?full", r"insufficient system storage", r"disk full")),
    ("expired", _words(
        r"retry time(?:out)? (?:exceeded|expired|reached)", r"time (?:limit )?expired",
        r"message expired", r"too long in (?:the )?queue", r"queue lifetime",
        r"could not (?:be )?deliver(?:ed)? (?:for|in|within) (?:the last )?\d",
        r"(?:will be|being) retried", r"was not delivered within", r"delivery (?:time )?expired",
        r"no answer from host", r"have not been able to deliver", r"gave up after",
        r"failing for a long time",
    )),
    ("networkerror", _words(
        r"connection (?:timed out|refused|reset|closed|lost|dropped)", r"timed out",
        r"network (?:is )?unreachable", r"no route to host", r"name service error",
        r"host name lookup failure", r"(?:dns|mx) (?:lookup )?(?:error|failure|failed)",
        r"socket error", r"did not accept our requests to connect",
        r"could not connect", r"unable to connect", r"lost connection", r"routing loop",
        r"too many hops", r"hop count", r"mail loop", r"loop(?:ing)? detected",
    )),
    ("mailererror", _words(r"mailer error", r"\bpipe to\b", r"program (?:failed|exited)")),
)
# fmt: on

# Wordings too vague to overrule a specific status code, read only when there is none.
# fmt: off
_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("userunknown", _words(r"mailbox (?:unavailable|not available)", r"invalid address")),
    ("policyviolation", _words(r"\bpolic(?:y|ies)\b", r"violat", r"header error")),
    ("contenterror", _words(r"\bheader", r"\bmime\b", r"content", r"\b8.?bit")),
    ("securityerror", _words(
        r"not authori[sz]ed", r"unauthori[sz]ed", r"authentication required",
        r"must (?:be )?authenticat", r"encryption required", r"\btls\b", r"certificate",
    )),
    ("systemerror", _words(
        r"system error", r"internal (?:server )?error", r"server error", r"local (?:error|problem)",
        r"temporar", r"try again", r"try later",
        r"service (?:is )?(?:currently |temporarily )?(?:not |un)available",
        r"queue file write error", r"i/o error", r"configuration error",
    )),
    ("rejected", _words(
        r"access denied", r"groups\.google\.com",
        r"(?:mail|message|e-?mail|content) (?:was |is |has been )?(?:rejected|refused|denied)",
    )),
)
# fmt: on

# RFC 3463 subject.detail -> reason (the class, 4 or 5, is applied afterwards).
# fmt: off
_STATUS_REASONS: dict[str, str] = {
    "1.0": "userunknown", "1.1": "userunknown", "1.2": "hostunknown", "1.3": "userunknown",
    "1.4": "filtered", "1.6": "hasmoved", "1.7": "rejected", "1.8": "rejected",
    "1.9": "systemerror", "1.10": "notaccept",
    "2.0": "filtered", "2.1": "suspend", "2.2": "mailboxfull", "2.3": "exceedlimit",
    "2.4": "filtered",
    "3.0": "systemerror", "3.1": "systemfull", "3.2": "notaccept", "3.3": "systemerror",
    "3.4": "mesgtoobig", "3.5": "systemerror",
    "4.0": "networkerror", "4.1": "expired", "4.2": "networkerror", "4.3": "systemerror",
    "4.4": "hostunknown", "4.5": "systemfull", "4.6": "networkerror", "4.7": "expired",
    "5.0": "syntaxerror", "5.1": "syntaxerror", "5.2": "syntaxerror", "5.3": "toomanyconn",
    "5.4": "syntaxerror", "5.5": "syntaxerror", "5.6": "syntaxerror",
    **{f"6.{n}": "contenterror" for n in range(10)},
    **{f"7.{n}": "securityerror" for n in range(31)},
    "7.1": "blocked", "7.2": "blocked", "7.13": "suspend", "7.16": "mesgtoobig",
    "7.17": "hasmoved", "7.18": "hasmoved", "7.20": "authfailure", "7.21": "authfailure",
    "7.22": "authfailure", "7.23": "authfailure", "7.24": "authfailure", "7.25": "requireptr",
    "7.26": "authfailure", "7.27": "rejected", "7.28": "spamdetected", "7.29": "authfailure",
    "7.30": "failedstarttls",
}
# fmt: on
# "Other" details (x.y.0) say too little to overrule even vague words; x.7.x is policy.
# 5.4.1 is also what Microsoft 365 answers for a recipient it does not know.
_VAGUE_STATUS = {"0.0", "1.0", "2.0", "3.0", "4.0", "5.0", "6.0", "4.1"}


def explain(
    status: str | None,
    diagnostic: str,
    *,
    action: str = "failed",
    command: str | None = None,
    context: str = "",
) -> tuple[BounceKind, str]:
    """A status and a reply's words as (kind, reason): what to do, and why in one word."""
    found = reason(status, diagnostic, command=command, context=context)
    return _kind(found, status, diagnostic, action), found


def classify(
    status: str | None, diagnostic: str, *, action: str = "failed", command: str | None = None
) -> BounceKind:
    """The one place where a status and a reply become a decision about an address."""
    return explain(status, diagnostic, action=action, command=command)[0]


def reason(
    status: str | None, diagnostic: str, *, command: str | None = None, context: str = ""
) -> str:
    """Sisimai's category for a refusal ("userunknown", "blocked", ...); "" when unknown.

    The reply's own words come first, then a specific status code, then what the bounce
    says around the reply (``context``), then vague words and codes. ``command`` is the
    SMTP command refused ("CONNECT", "HELO", "MAIL", "RCPT", "DATA"): an address's own
    fault shows at RCPT TO, so before it (at CONNECT, HELO or MAIL FROM) a refusal is a
    verdict on the sender, and "user unknown" once the message was sent (DATA) is
    "filtered" (Sisimai's word for it), or the sender's problem at the services known to
    answer so when their user's reception filter refuses the sender.
    """
    code = _STATUS.match(status or "") or _IN_REPLY.match(diagnostic)
    subject = f"{code[2]}.{code[3]}" if code else ""
    specific = _STATUS_REASONS.get(subject) if subject not in _VAGUE_STATUS else None
    diagnostic, context = diagnostic.lower(), context.lower()
    found = (
        _first(_CAUSES, diagnostic)
        or specific
        or _first(_HINTS, diagnostic)
        or _first(_CAUSES, context)
        or _STATUS_REASONS.get(subject)
        or _by_basic(diagnostic)
        or _first(_HINTS, context)
        or ""
    )
    if subject in _SENDER_ADDRESS_CODES:  # the sender's own address: 5.1.7, 5.1.8, 5.7.27
        return _STATUS_REASONS[subject]
    if command in _BEFORE_RCPT and KIND_OF_REASON.get(found, _HARD) is _HARD:
        return _BY_COMMAND[command]  # refused before any recipient was named
    if command == "DATA" and found == "userunknown" and not subject.startswith("1."):
        return "rejected" if _FILTERS_AS_UNKNOWN.search(context) else "filtered"
    return found


# What an address's fault means when it is refused outside RCPT TO.
_BY_COMMAND = {"CONNECT": "blocked", "HELO": "blocked", "MAIL": "rejected"}
_BEFORE_RCPT = {"CONNECT", "HELO", "MAIL"}
_SENDER_ADDRESS_CODES = {"1.7", "1.8", "7.27"}
# NTT docomo answers "550 Unknown user" after DATA when its user's filter refuses the sender.
_FILTERS_AS_UNKNOWN = re.compile(r"\bdocomo\.ne\.jp\b")


def _first(table: tuple[tuple[str, re.Pattern[str]], ...], text: str) -> str | None:
    """The first reason whose wordings the text holds."""
    return next((name for name, words in table if words.search(text)), None)


def _by_basic(diagnostic: str) -> str | None:
    """RFC 5321's basic code, the last resort (554 is as often spam as anything else)."""
    match = _BASIC.match(diagnostic)
    if not match:
        return None
    code = int(match[1] + match[2])
    if code in (550, 553):
        return "userunknown"
    return {551: "hasmoved", 552: "mailboxfull", 521: "notaccept", 556: "notaccept"}.get(
        code, "syntaxerror" if 500 <= code <= 504 else None
    )


def _kind(found: str, status: str | None, diagnostic: str, action: str) -> BounceKind:
    """A reason's kind; delayed notices stay delayed and 4xx never condemns an address."""
    if action == "delayed":
        return BounceKind.DELAYED
    kind = KIND_OF_REASON.get(found, BounceKind.UNKNOWN)
    code = _STATUS.match(status or "")
    permanence = code[1] if code else _basic_class(diagnostic)
    if permanence == "4" and kind in (BounceKind.HARD, BounceKind.UNKNOWN):
        return BounceKind.SOFT  # a temporary failure never condemns an address
    return kind


def _basic_class(diagnostic: str) -> str | None:
    """'4' or '5' from a reply's basic code, when there is no enhanced one."""
    match = _BASIC.match(diagnostic)
    return match[1] if match else None

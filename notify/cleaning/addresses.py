"""What a valid address says about itself before any mail goes out.

- a **likely typo domain**: one edit (or one swap of neighbours) from a popular consumer
  mail domain (`gmial.com`, `hotmial.com`, `gmail.co`), or ending in a TLD nobody has
  (`.con`, `.cmo`). Such a domain may belong to a stranger, so cleaning holds the address
  back unless the operator says otherwise. Nothing is ever corrected automatically, and
  only the popular domains below have near misses: `acme.co` is never flagged.
- a **role address**: a mailbox of a function, not a person (`noreply@`, `postmaster@`,
  `info@`), listed for review and still sent to.
- an address that **needs SMTPUTF8**: a non-ASCII local part, which only a relay that
  offers SMTPUTF8 accepts (an internationalised domain is sent in its ASCII form and
  needs nothing).
"""

from __future__ import annotations

import functools
import re
import string

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

from notify.models import RejectKind

# Near misses of these are flagged. Only names long enough that a one-edit neighbour is
# far more likely a slip than a real domain: `aol.com`, `gmx.de`, `me.com` have too many
# real neighbours (`ao.com`, `gmc.de`), so only their TLD typos (`aol.con`) are caught.
POPULAR_DOMAINS = (
    "gmail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "icloud.com",
    "googlemail.com",
    "protonmail.com",
    "hotmail.co.uk",
    "yahoo.co.uk",
    "btinternet.com",
    "comcast.net",
    "verizon.net",
    "sbcglobal.net",
    "bellsouth.net",
    "wanadoo.fr",
    "laposte.net",
    "t-online.de",
    "yandex.ru",
)
# Real mail domains one edit from a popular one: never a typo.
KNOWN_DOMAINS = frozenset(
    (
        *POPULAR_DOMAINS,
        *("mail.com", "email.com", "ymail.com", "gmx.com", "gmx.net", "gmx.de", "live.com"),
        *("msn.com", "aol.com", "me.com", "mac.com", "cloud.com", "proton.me", "web.de"),
        *("yahoo.fr", "yahoo.de", "yahoo.ca", "hotmail.fr", "hotmail.de", "hotmail.it"),
        *("outlook.fr", "outlook.de", "orange.fr", "free.fr"),
    )
)
# Top-level domains that do not exist, mistyped for one that does.
TLD_TYPOS = {
    **dict.fromkeys(("con", "cmo", "ocm", "cpm", "vom", "xom", "comm", "coom", "c0m"), "com"),
    **dict.fromkeys(("nte", "nett", "ney"), "net"),
    **dict.fromkeys(("ogr", "orgg"), "org"),
}
_DOMAIN_CHARS = string.ascii_lowercase + string.digits + "-."

# Role mailboxes, compared without case, +tag, dots, hyphens or underscores.
ROLE_MAILBOXES: dict[str, str] = {
    **dict.fromkeys(
        ("noreply", "donotreply", "nobody", "bounce", "bounces"),
        "a no-reply mailbox: probably nobody reads it",
    ),
    **dict.fromkeys(
        ("postmaster", "hostmaster", "webmaster", "abuse", "mailerdaemon", "root", "security"),
        "a system mailbox (RFC 2142), not a customer",
    ),
    **dict.fromkeys(
        (
            "admin",
            "administrator",
            "info",
            "contact",
            "office",
            "sales",
            "support",
            "billing",
            "accounts",
            "enquiries",
            "hello",
            "team",
        ),
        "a shared mailbox: others may read this customer's details",
    ),
}
_ROLE_NOISE = str.maketrans("", "", ".-_")


@functools.lru_cache(maxsize=65536)
def typo_of(domain: str) -> str | None:
    """The domain `domain` is most likely a mistyping of, or None when it looks fine."""
    domain = domain.lower()
    if domain in KNOWN_DOMAINS:
        return None
    head, dot, tld = domain.rpartition(".")
    fixed = f"{head}.{TLD_TYPOS[tld]}" if dot and tld in TLD_TYPOS else domain
    return _near_misses().get(fixed) or (fixed if fixed != domain else None)


@functools.cache
def _near_misses() -> dict[str, str]:
    """Every string one edit or one swap from a popular domain -> that domain (~30,000)."""
    misses: dict[str, str] = {}
    for popular in POPULAR_DOMAINS:
        for miss in _one_edit_away(popular):
            if miss not in KNOWN_DOMAINS and "." in miss.strip("."):
                misses.setdefault(miss, popular)  # the more popular domain wins a tie
    return misses


def _one_edit_away(word: str) -> set[str]:
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    deletions = {a + b[1:] for a, b in splits if b}
    swaps = {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
    replacements = {a + c + b[1:] for a, b in splits if b for c in _DOMAIN_CHARS}
    insertions = {a + c + b for a, b in splits for c in _DOMAIN_CHARS}
    return (deletions | swaps | replacements | insertions) - {word}


def role_of(address: str) -> str | None:
    """Why `address` looks like a role mailbox rather than a person's, or None."""
    local = address.rpartition("@")[0].split("+", 1)[0]
    return ROLE_MAILBOXES.get(local.lower().translate(_ROLE_NOISE))


def needs_smtputf8(address: str) -> bool:
    """True when only a relay offering SMTPUTF8 can take this address."""
    return not address.isascii()


_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(
    rf"(?P<local>{_ATEXT}(?:\.{_ATEXT})*)@"
    r"(?P<domain>(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63})"
)
_SPECIAL_USE = tuple(SPECIAL_USE_DOMAIN_NAMES)


def check_address(raw: str, allow_typo_domains: bool) -> tuple[str, str] | str:
    """(ledger key, address to send to), or why the address is not sent to."""
    verdict = _validate(raw)
    if allow_typo_domains or isinstance(verdict, str):
        return verdict
    domain = verdict[1].rpartition("@")[2]
    fix = typo_of(domain)
    if fix is None:
        return verdict
    return (
        f"{RejectKind.TYPO_DOMAIN}: {domain} looks like {fix}; "
        "fix the export, or pass --allow-typo-domains"
    )


def normalise_address(raw: str) -> tuple[str, str] | str:
    """(ledger key, address to send to) for one address, or why it cannot be sent to:
    the same rules as the export's main address column, for an alternate address."""
    return _validate(raw.strip())


def _validate(raw: str) -> tuple[str, str] | str:
    if not raw:
        return RejectKind.NO_ADDRESS.value
    plain = plain_address(raw)
    if plain is not None:  # the same string object where possible: a million rows add up
        return (plain if plain.islower() else plain.lower()), plain
    try:
        valid = validate_email(raw, check_deliverability=False)
    except EmailNotValidError as exc:
        return f"{RejectKind.INVALID_ADDRESS}: {exc}"
    # The domain goes out in its ASCII (IDNA) form; a non-ASCII local part stays as it is.
    address = valid.ascii_email or f"{valid.normalized.rpartition('@')[0]}@{valid.ascii_domain}"
    # lower(), not casefold(): casefold makes 'straße@' and 'strasse@' one recipient.
    return valid.normalized.lower(), address


def plain_address(raw: str) -> str | None:
    """The normalised form of an everyday ASCII address, or None to ask email-validator.

    Most addresses are plain 'name@example.com'; checking those with one regex is ~20x
    cheaper than the full validator and gives the same answer (a test holds it to that)."""
    match = _PLAIN_ADDRESS.fullmatch(raw)
    if match is None or len(raw) > 254 or len(match["local"]) > 64:
        return None
    domain = match["domain"].lower()
    if _needs_validator(domain):
        return None
    return raw if domain == match["domain"] else f"{match['local']}@{domain}"


@functools.lru_cache(maxsize=65536)
def _needs_validator(domain: str) -> bool:
    """Punycode and special-use domains ('x.test') are email-validator's to judge."""
    return "--" in domain or any(domain == d or domain.endswith("." + d) for d in _SPECIAL_USE)

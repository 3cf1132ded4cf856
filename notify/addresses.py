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
import string

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

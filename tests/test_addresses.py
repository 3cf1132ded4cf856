"""What an address says about itself: likely typo domains, role mailboxes, SMTPUTF8."""

from __future__ import annotations

import pytest

from notify.cleaning.addresses import needs_smtputf8, role_of, typo_of


@pytest.mark.parametrize(
    ("domain", "fix"),
    [
        ("gmial.com", "gmail.com"),
        ("GMAIL.CON", "gmail.com"),
        ("hotmial.com", "hotmail.com"),
        ("gmail.co", "gmail.com"),
        ("yahooo.com", "yahoo.com"),
        ("outlok.com", "outlook.com"),
        ("example.cmo", "example.com"),
        ("aol.con", "aol.com"),
    ],
)
def test_likely_typo_domains_name_their_fix(domain, fix):
    assert typo_of(domain) == fix


@pytest.mark.parametrize(
    "domain",
    ["gmail.com", "acme.co", "mail.com", "ymail.com", "gmx.de", "aol.com", "example.org", "me.com"],
)
def test_real_domains_are_never_flagged(domain):
    assert typo_of(domain) is None


@pytest.mark.parametrize(
    ("address", "flagged"),
    [
        ("noreply@acme.example", True),
        ("No-Reply+x@acme.example", True),
        ("postmaster@acme.example", True),
        ("info@acme.example", True),
        ("mary.info@acme.example", False),
        ("mary@acme.example", False),
    ],
)
def test_role_mailboxes(address, flagged):
    assert (role_of(address) is not None) is flagged


def test_only_a_non_ascii_local_part_needs_smtputf8():
    assert needs_smtputf8("josé@example.com")
    assert not needs_smtputf8("jose@xn--bcher-kva.example")

"""Regenerate the demo export data/incident-42-affected.csv (run: python data/make_demo.py).

A messy CRM export for incident 42 (duplicate charge on March renewals): ~220 customers,
~350 rows, several orders per customer, the same address in different case and spacing,
invalid addresses, accented and non-Latin names, empty names, an HTML-looking name,
look-alike customers and mixed phone formats. Seeded, so the output is always the same.
Only example domains (example.com/.org/.net and their subdomains) are used.
"""

from __future__ import annotations

import csv
import random
import unicodedata
from pathlib import Path

OUT = Path(__file__).with_name("incident-42-affected.csv")
HEADER = ["Customer", "Email Address", "Phone", "Account ID", "order_id", "amount", "charged_on"]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "eu.example.net"]
FIRST = (  # noqa: SIM905
    "Aaron Beatriz Chidi Dmitri Elena Fatima Gustav Hiroshi Ingrid Jamal Katarzyna Leon "
    "Mateus Nadia Olusegun Priya Quentin Rosa Sven Tamar Umberto Valentina Wiktor Ximena "
    "Yusuf Zainab Bruno Cecilia Dorothea Emeka Felix Greta Hamza Isabel Jasper Kofi"
).split()
LAST = (  # noqa: SIM905
    "Abbott Bergstrom Castillo Dimitrov Eriksen Fontaine Gallagher Haddad Ivanova "
    "Jankowski Kowalczyk Lindqvist Mwangi Nakamura Okafor Petrov Quigley Rahman Santos "
    "Tanaka Urquhart Vasquez Whitfield Xu Yamamoto Zimmermann"
).split()
MARIA = ["maria.lopez@example.com", "  Maria.Lopez@Example.com ", "MARIA.LOPEZ@example.com"]
AMOUNTS = ["49.00", "49.00", "19.99", "129.00", "9.50", "79.00", "24.00", "199.00"]
# (name, address): the special cases the tool must handle.
PLANTED = [
    ("Zoë Ångström", "zoe.angstrom@example.org"),
    ("Seán O'Brien", "sean.obrien@example.net"),
    ("François Dupré", "francois.dupre@eu.example.net"),
    ("D'Arcy Núñez", "darcy.nunez@example.com"),
    ("山田 花子", "hanako.yamada@mail.example.com"),
    ("Γιώργος Παπαδόπουλος", "giorgos.papadopoulos@example.org"),
    ("Jon Smith", "jon.smith@example.net"),  # near-identical names, different people
    ("John Smith", "john.smith@example.org"),
    ("Ann Lee", "ann.lee@example.com"),  # addresses one edit apart, different people
    ("Anh Le", "ann.le@example.com"),
    ("<b>Bold</b> Björk", "bjork@example.net"),  # must be escaped in HTML
    ("Maria Lopez", "maria.lopez@example.com"),  # one recipient, three spellings
    ("", "no.name.1@example.com"),  # empty name cells
    ("", "billing@corp.example.org"),
    ("", "k.osei@example.net"),
    ("Bob Marsh", "bob@@example.com"),  # invalid addresses
    ("Nora Field", "no-at-sign.example.com"),
    ("Carol Pike", "carol@"),
    ("Dave Quinn", "dave@example"),
    ("Ella Frost", ""),
    ("Eve Hart", "eve @example.com"),
    ("Frank Oduya", "frank@example..com"),
]


def ascii_slug(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in plain.lower() if c.isalnum())


def phone(rng: random.Random) -> str:
    n = rng.randrange(100, 1000), rng.randrange(1000, 10000)
    formats = ["", "", f"+1 555 {n[1]}", f"(555) {n[0]}-{n[1]}", f"555.{n[0]}.{n[1]}"]
    return rng.choice([*formats, f"+44 20 7946 0{n[0]}", f"555{n[0]}{n[1]}"])


def messy(address: str, rng: random.Random) -> str:
    """The same address as another system typed it: case and stray spaces."""
    local, _, domain = address.partition("@")
    variant = rng.choice([address.upper(), f"{local.title()}@{domain.title()}", address])
    return rng.choice(["", " ", "  "]) + variant + rng.choice(["", " ", "\t"])


def main() -> None:
    rng = random.Random(42)
    customers = list(PLANTED)
    pairs = [(f, s) for f in FIRST for s in LAST]
    rng.shuffle(pairs)
    for first, last in pairs[: 220 - len(PLANTED)]:
        address = f"{ascii_slug(first)}.{ascii_slug(last)}@{rng.choice(DOMAINS)}"
        customers.append((f"{first} {last}", address))
    counts = [1] * 130 + [2] * 60 + [3] * 20 + [4] * 10
    rng.shuffle(counts)
    counts[PLANTED.index(("Maria Lopez", MARIA[0]))] = len(MARIA)
    rows = []
    for (name, address), count in zip(customers, counts, strict=True):
        tel, account = phone(rng), f"AC-{rng.randrange(100000, 999999)}"
        for n in range(count):
            shown = messy(address, rng) if n and address and rng.random() < 0.5 else address
            shown = MARIA[n] if address == MARIA[0] else shown
            day = f"2026-03-{rng.randrange(1, 6):02d}"
            tel_shown = tel if n == 0 or rng.random() < 0.7 else ""
            rows.append([name, shown, tel_shown, account, day, rng.choice(AMOUNTS)])
    rows.sort(key=lambda row: row[4])  # the CRM exports by charge date
    order = 10234
    with OUT.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        for name, shown, tel, account, day, amount in rows:
            writer.writerow([name, shown, tel, account, f"A-{order}", amount, day])
            order += rng.randrange(1, 40)
    print(f"wrote {OUT} ({len(rows)} rows, {len(customers)} customers)")


if __name__ == "__main__":
    main()

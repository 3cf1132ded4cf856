"""Regenerate incident 43's demo data (run: python data/make_demo_43.py).

Incident 43: VAT charged twice on April invoices. The export has a language and an
invoice file per row; one customer has two invoices (two rows), one name holds Markdown
characters, and two languages have no template folder (es, nl: they fall back to
English). Every customer gets the corrected invoice(s) and the shared FAQ, data/faq.pdf.
The PDFs are small, valid, one-page documents. Fixed data, so the output is always the
same. Only example domains are used.
"""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

DATA = Path(__file__).parent
OUT = DATA / "incident-43-affected.csv"
HEADER = [
    "Customer",
    "Email Address",
    "Lang",
    "Invoice File",
    "invoice",
    "amount",
    "overcharged",
    "currency",
    "issued_on",
]
VAT = {"EUR": Decimal("0.19"), "GBP": Decimal("0.20"), "USD": Decimal("0.08")}
# name, address, language, currency, amounts (one invoice each)
CUSTOMERS = [
    ("Ann Lee", "ann.lee@example.com", "en", "USD", ["129.00"]),
    ("Bernd Müller", "bernd.mueller@example.de", "de", "EUR", ["1249.90", "89.00"]),
    ("Chloé Petit", "chloe.petit@example.fr", "fr", "EUR", ["349.00"]),
    ("Dagmar Huber", "dagmar.huber@example.at", "de-AT", "EUR", ["59.00"]),
    ("Émile Tremblay", "emile.tremblay@example.ca", "fr-CA", "USD", ["2400.00"]),
    ("*Star* Trading_Co [EU](http://evil.example)", "orders@star-trading.example.com", "en",
     "GBP", ["780.00"]),
    ("Lucía Fernández", "lucia.fernandez@example.es", "es", "EUR", ["99.00"]),
    ("Sanne de Vries", "sanne.devries@example.nl", "nl", "EUR", ["450.00"]),
    ("Tom Baker", "tom.baker@example.co.uk", "", "GBP", ["15.50"]),
]


def pdf(lines: list[str]) -> bytes:
    """A one-page PDF showing `lines` in Helvetica (text in Windows-1252)."""
    text = b"BT /F1 12 Tf 72 760 Td 16 TL"
    for line in lines:
        escaped = line.encode("cp1252", "replace").replace(b"\\", b"\\\\")
        text += b" (" + escaped.replace(b"(", b"\\(").replace(b")", b"\\)") + b") '"
    text += b" ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return out


def invoice(number: str, name: str, amount: Decimal, currency: str, vat: Decimal) -> bytes:
    return pdf(
        [
            "Acme Ltd - corrected invoice",
            "",
            f"Invoice {number} (corrected), issued 2026-04-01",
            f"Customer: {name}",
            "",
            f"Net amount:   {amount:.2f} {currency}",
            f"VAT {vat:.0%}:      {amount * vat:.2f} {currency}",
            f"Total:        {amount * (1 + vat):.2f} {currency}",
            "",
            "This invoice replaces the one of 2026-04-01, which charged VAT twice.",
        ]
    )


def main() -> None:
    (DATA / "invoices").mkdir(exist_ok=True)
    (DATA / "faq.pdf").write_bytes(
        pdf(
            [
                "Acme Ltd - VAT charged twice on April invoices: questions and answers",
                "",
                "What happened? A billing update applied VAT twice to invoices of 1 April 2026.",
                "Do I need to do anything? No. The difference is refunded automatically.",
                "When do I get the money? Within 10 business days, to the original payment.",
                "Which invoice counts? The corrected one attached to our email.",
                "Questions? Reply to the email, or call +1 555 0100.",
            ]
        )
    )
    rows = []
    number = 41200
    for name, address, language, currency, amounts in CUSTOMERS:
        for amount in map(Decimal, amounts):
            number += 7
            code = f"INV-2026-{number}"
            path = f"data/invoices/{code}.pdf"
            (DATA / "invoices" / f"{code}.pdf").write_bytes(
                invoice(code, name, amount, currency, VAT[currency])
            )
            overcharged = (amount * VAT[currency]).quantize(Decimal("0.01"))
            charged = amount + 2 * overcharged
            row = [name, address, language, path, code, charged, overcharged, currency]
            rows.append([*row, "2026-04-01"])
    with OUT.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        writer.writerows(rows)
    print(f"wrote {OUT} ({len(rows)} rows), data/faq.pdf and {len(rows)} invoices")


if __name__ == "__main__":
    main()

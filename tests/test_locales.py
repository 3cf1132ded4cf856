"""The customer's language: templates per language with a counted fallback, and amounts,
numbers and dates formatted in the customer's locale."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
from decimal import Decimal
from email.message import EmailMessage
from typing import Any

import pytest

from notify import pipeline
from notify.incident import load_incident
from notify.locales import FormatError, date, money, number
from notify.workspace import Context
from tests.conftest import DEFAULT_MANIFEST

HEADER = ["Customer", "Email Address", "Phone", "order_id", "amount", "currency", "charged", "Lang"]
SUBJECTS = {
    "": "Refund of {{ items[0].amount | money(items[0].currency) }}\n",
    "de": "Erstattung von {{ items[0].amount | money(items[0].currency) }}\n",
    "fr": "Remboursement de {{ items[0].amount | money(items[0].currency) }}\n",
}
BODIES = {
    "": "Charged on {{ items[0].charged | date }}; {{ 1234567.5 | number }} points.\n",
    "de": "Abgebucht am {{ items[0].charged | date }}; {{ 1234567.5 | number }} Punkte.\n",
    "fr": "Débité le {{ items[0].charged | date }} ; {{ 1234567.5 | number }} points.\n",
}
ROWS = [
    ["Ann Lee", "ann@example.com", "", "A-1", "1234.5", "EUR", "2026-03-01", "en"],
    ["Bernd Maier", "bernd@example.de", "", "A-2", "1234.5", "EUR", "2026-03-01", "de-DE"],
    ["Chloé Petit", "chloe@example.fr", "", "A-3", "1234.5", "eur", "2026-03-01", "FR"],
    ["Duarte Silva", "duarte@example.pt", "", "A-4", "1234.5", "EUR", "2026-03-01", "pt"],
    ["Ed Norm", "ed@example.com", "", "A-5", "1234.5", "USD", "2026-03-01T09:30", ""],
    ["Kor Vash", "kor@example.com", "", "A-6", "9", "EUR", "2026-03-01", "klingon"],
]


@pytest.fixture
def languages(workspace):
    """English templates in templates/apology/, German and French in their folders."""
    manifest = DEFAULT_MANIFEST.replace('phone = "Phone"', 'phone = "Phone"\nlanguage = "Lang"')
    manifest = manifest.replace('items = ["order_id", "amount"]', "items = " + str(HEADER[3:7]))
    workspace.write("incidents/42.toml", manifest.replace("'", '"'))
    (workspace.root / "templates/apology/body.html.j2").unlink()
    for language in SUBJECTS:
        folder = f"templates/apology/{language}/" if language else "templates/apology/"
        workspace.write(folder + "subject.j2", SUBJECTS[language])
        workspace.write(folder + "body.txt.j2", BODIES[language])
    workspace.rows(ROWS, header=HEADER)
    return workspace


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def test_each_customer_reads_their_language_and_their_formats(languages, run_cli, smtp_server):
    languages.smtp(smtp_server)
    result = run_cli(languages, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    received = {m.rcpt_tos[0]: parse(m.data) for m in smtp_server.messages}
    texts = {
        to: (message["Subject"], message.get_content().rstrip()) for to, message in received.items()
    }
    assert texts == {
        "ann@example.com": (
            "Refund of €1,234.50",
            "Charged on March 1, 2026; 1,234,567.5 points.",
        ),
        "bernd@example.de": (
            "Erstattung von 1.234,50\xa0€",
            "Abgebucht am 1. März 2026; 1.234.567,5 Punkte.",
        ),
        "chloe@example.fr": (
            "Remboursement de 1\u202f234,50\xa0€",
            "Débité le 1 mars 2026 ; 1\u202f234\u202f567,5 points.",
        ),
        "duarte@example.pt": (  # no pt/ folder: the incident's own templates, in pt formats
            "Refund of €\xa01.234,50",
            "Charged on 1 de março de 2026; 1.234.567,5 points.",
        ),
        "ed@example.com": (
            "Refund of $1,234.50",
            "Charged on March 1, 2026; 1,234,567.5 points.",
        ),
        "kor@example.com": ("Refund of €9.00", "Charged on March 1, 2026; 1,234,567.5 points."),
    }


def test_check_counts_and_lists_the_fallbacks(languages, run_cli):
    result = run_cli(languages, "check", "--incident", "42", "--offline")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  language fallbacks          2" in lines
    assert "    klingon (not a language)        1" in lines
    assert "    pt                              1" in lines
    assert (
        "Languages without a folder in templates/apology/ get its own templates: "
        "klingon (not a language), pt; add templates/apology/<language>/ to write to them "
        "in theirs"
    ) in lines


def test_a_more_specific_folder_wins(languages, run_cli, smtp_server):
    languages.write("templates/apology/de_DE/subject.j2", "Für Deutschland\n")
    languages.write("templates/apology/de_DE/body.txt.j2", "{{ 2.5 | number }}\n")
    languages.smtp(smtp_server)
    result = run_cli(languages, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    bernd = next(m for m in smtp_server.messages if m.rcpt_tos == ["bernd@example.de"])
    assert parse(bernd.data)["Subject"] == "Für Deutschland"
    assert parse(bernd.data).get_content() == "2,5\r\n"


def test_without_a_language_column_the_filters_format_in_english(workspace, run_cli):
    workspace.write("templates/apology/subject.j2", "{{ items[0].amount | money('GBP') }}\n")
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 0, result.output
    eml = (workspace.root / "previews/incident-42/000001-ann_example.com.eml").read_bytes()
    assert parse(eml)["Subject"] == "£49.00"
    assert "language fallbacks" not in result.output


@pytest.mark.parametrize(
    ("cell", "column", "message"),
    [
        ("12,50", 4, "cannot format '12,50' with money: not a number like 1234.50"),
        ("EURO", 5, "'EURO' is not a currency code (ISO 4217, like EUR) for money"),
        ("1/3/2026", 6, "cannot format '1/3/2026' with date: not a date like 2026-03-01"),
    ],
)
def test_a_value_that_cannot_be_formatted_stops_the_check_with_its_row(
    languages, run_cli, cell, column, message
):
    rows = [list(row) for row in ROWS]
    rows[1][column] = cell
    languages.rows(rows, header=HEADER)
    result = run_cli(languages, "check", "--incident", "42", "--offline")
    assert result.exit_code == 3
    template = "subject.j2 line 1" if column != 6 else "body.txt.j2 line 1"
    assert result.stderr.strip() == (
        "Error: 1 problem(s) stop the send; nothing was sent. First: bernd@example.de "
        f"(data/affected.csv row 3): {template}: {message}; "
        "fix the value in the export or the template"
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [(Decimal("3.10"), "3.1"), (7, "7"), ("-0.5", "-0.5"), (" 12 ", "12")],
)
def test_number_takes_numbers_and_numeric_text(value: Any, expected: str):
    assert number(value, locale="en") == expected


@pytest.mark.parametrize("value", ["NaN", "Infinity", "", "1e", True, None])
def test_number_refuses_what_is_not_a_finite_number(value: Any):
    with pytest.raises(FormatError, match="not a number like 1234.50"):
        number(value, locale="en")


@pytest.mark.parametrize(
    ("value", "form", "expected"),
    [
        (dt.date(2026, 3, 1), "long", "1. März 2026"),
        (dt.datetime(2026, 3, 1, 23, 59), "short", "01.03.26"),
        ("2026-03-01 08:00:00+02:00", "full", "Sonntag, 1. März 2026"),
        ("2026-03-01", "d MMM y", "1 März 2026"),
    ],
)
def test_date_takes_dates_datetimes_and_iso_text(value: Any, form: str, expected: str):
    assert date(value, form, locale="de") == expected


def test_money_keeps_the_currencys_own_decimals():
    assert money("1234", "JPY", locale="en") == "¥1,234"
    assert money(Decimal("0.5"), "EUR", locale="de") == "0,50\xa0€"


def test_a_language_folder_is_part_of_the_templates_fingerprint(languages):
    def fingerprint() -> str:
        incident = load_incident(Context.open(languages.root, {}), "42")
        return pipeline.fingerprints(incident)[0]

    before = fingerprint()
    languages.write("templates/apology/fr/body.txt.j2", "Débité.\n")
    assert fingerprint() != before

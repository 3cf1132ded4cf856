"""The report's rows: the unreachable first, each with its export row, safely escaped; and
every CSV notify writes opens in a spreadsheet with its accents right and no formula run."""

from __future__ import annotations

import codecs
import csv
import io

import pytest

from notify.errors import OutputError
from notify.models import CleanResult, LookAlike, Reject, Review
from notify.reports import (
    ReportRow,
    counts,
    fold,
    ordered,
    reject_rows,
    safe_cells,
    write_csv,
    write_html,
    write_lookalikes,
    write_rejects,
    write_report,
    write_review,
)


def row(state: str, email: str, number: int, **contact: str) -> ReportRow:
    return ReportRow(state, email, "", "why", 1, None, None, "x.csv", number, contact)


def test_unreachable_come_first_then_in_progress_then_delivered_in_source_order():
    rows = [
        row("accepted", "a@x.io", 2),
        row("soft-bounced", "b@x.io", 3),
        row("hard-bounced", "c@x.io", 4),
        row("gave-up", "d@x.io", 1),
    ]
    assert [r.email for r in ordered(rows)] == ["d@x.io", "c@x.io", "b@x.io", "a@x.io"]
    assert counts(rows) == {"unreachable": 2, "not yet delivered": 1, "delivered": 1}


def test_rejected_rows_carry_their_export_columns():
    rejects = [Reject("x.csv", 7, "Email", "bob@@x", "not a valid address")]
    [made] = reject_rows(rejects, {("x.csv", 7): {"Phone": "555 0100"}})
    assert (made.outcome, made.email, made.contact["Phone"]) == (
        "unreachable",
        "bob@@x",
        "555 0100",
    )


def test_rows_of_one_customer_fold_into_one_counting_their_items():
    rejects = [
        Reject("x.csv", 3, "Email", "bob@@x", "not a valid address"),
        Reject("x.csv", 5, "Email", "BOB@@x", "not a valid address"),
        Reject("x.csv", 6, "Email", "", "no address"),
        Reject("x.csv", 8, "Email", "", "no address"),
    ]
    contact = {("x.csv", 6): {"Name": "Eve"}, ("x.csv", 8): {"Name": "Eve"}}
    folded = fold(reject_rows(rejects, contact))
    assert [(r.email, r.row, r.items) for r in folded] == [("bob@@x", 3, 2), ("", 6, 2)]
    assert counts(folded)["unreachable"] == 2


def test_name_phone_and_account_come_first_guessed_from_the_export_headers():
    out = io.StringIO()
    contact = {"Customer Name": "Ann", "Mobile": "555", "Account ID": "A-7", "Plan": "gold"}
    write_csv([row("gave-up", "d@x.io", 1, **contact), row("accepted", "a@x.io", 2, Id="7")], out)
    records = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(records[0])[:7] == [
        "outcome",
        "name",
        "phone",
        "account",
        "reason",
        "server_said",
        "email",
    ]
    assert [records[0][k] for k in ("name", "phone", "account")] == ["Ann", "555", "A-7"]
    assert (records[0]["export: Plan"], records[0]["export: Id"]) == ("gold", "")
    assert records[1]["export: Id"] == "7"


@pytest.mark.parametrize(
    ("state", "said", "words"),
    [
        ("hard-bounced", "550 5.1.1 <d@x.io>: Recipient address rejected", "no such mailbox"),
        ("soft-bounced", "552 5.2.2 Mailbox full", "mailbox full"),
        ("refused", "554 5.7.1 Message refused by policy", "refused by policy"),
        ("gave-up", "421 try later", "kept failing; gave up"),
        ("invalid address", "not a valid address: no @", "invalid address"),
        ("accepted", "250 ok", "delivered"),
    ],
)
def test_the_reason_is_said_in_plain_words_with_the_server_words_behind(state, said, words):
    made = ReportRow(state, "d@x.io", "", said, 1, None, None, "x.csv", 1, {})
    assert (made.as_dict()["reason"], made.as_dict()["server_said"]) == (words, said)


def test_html_escapes_what_the_export_holds():
    out = io.StringIO()
    write_html([row("gave-up", "<script>@x.io", 1, Name="<b>Eve</b>")], out, title="Incident <1>")
    page = out.getvalue()
    assert "<script>" not in page and "<b>Eve</b>" not in page
    assert "&lt;b&gt;Eve&lt;/b&gt;" in page and "<title>Incident &lt;1&gt;</title>" in page
    assert '<tr class="unreachable"><td class="outcome nowrap lead" data-label="Outcome">' in page


FORMULAS = ['=HYPERLINK("http://x","y")', "+1 555 0101", "-2+3", "@SUM(A1)", "\tx", "\rx"]
KEPT = ["Ann", "-3.50", "+49", "42", "a=b", ""]


def test_a_cell_starting_like_a_formula_gets_a_quote_and_plain_numbers_stay():
    assert safe_cells([*FORMULAS, *KEPT, 7, None]) == [
        *("'" + cell for cell in FORMULAS),
        *KEPT,
        7,
        None,
    ]


def test_the_report_file_has_a_bom_and_no_formula(tmp_path):
    path = tmp_path / "report.csv"
    write_report(
        [row("gave-up", "=cmd@x.io", 1, Phone="+1 555 0101", Note="-2+3")], path, html_title=None
    )
    assert path.read_bytes().startswith(codecs.BOM_UTF8)
    with path.open(encoding="utf-8-sig", newline="") as out:
        [record] = list(csv.DictReader(out))
    assert (record["email"], record["export: Phone"], record["export: Note"]) == (
        "'=cmd@x.io",
        "'+1 555 0101",
        "'-2+3",
    )


def test_the_files_check_writes_have_a_bom_and_no_formula(tmp_path):
    cleaned = CleanResult(
        recipients=[],
        rejects=[Reject("x.csv", 2, "Email", "=1+2", "not a valid address")],
        lookalikes=[LookAlike("@a@x.io", "+b@x.io", "similar names '=A' and 'A'")],
        rows_read=1,
        review=[Review("-x@x.io", "bidi control", "name holds U+202E", "x.csv", 3)],
    )
    files = {name: tmp_path / f"{name}.csv" for name in ("rejects", "lookalikes", "review")}
    write_rejects(cleaned, files["rejects"])
    write_lookalikes(cleaned, files["lookalikes"])
    write_review(cleaned, files["review"])
    read = {}
    for name, path in files.items():
        assert path.read_bytes().startswith(codecs.BOM_UTF8)
        with path.open(encoding="utf-8-sig", newline="") as out:
            read[name] = list(csv.reader(out))
    assert read["rejects"][1] == ["x.csv", "2", "Email", "'=1+2", "not a valid address"]
    assert read["lookalikes"][1] == ["'@a@x.io", "'+b@x.io", "similar names '=A' and 'A'"]
    assert read["review"][1] == ["'-x@x.io", "bidi control", "name holds U+202E", "x.csv", "3"]


def test_a_report_into_a_missing_folder_is_one_line(tmp_path):
    with pytest.raises(OutputError) as raised:
        write_report([], tmp_path / "nope" / "r.csv", html_title=None)
    assert str(raised.value) == (
        f"cannot write {tmp_path}/nope/r.csv: folder {tmp_path}/nope does not exist; create the "
        "folder or choose another path"
    )

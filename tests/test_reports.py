"""The report's rows: the unreachable first, each with its export row, safely escaped."""

from __future__ import annotations

import csv
import io

from notify.models import Reject
from notify.reports import ReportRow, counts, ordered, reject_rows, write_csv, write_html


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


def test_csv_has_fixed_columns_then_every_export_column():
    out = io.StringIO()
    write_csv([row("gave-up", "d@x.io", 1, Phone="555"), row("accepted", "a@x.io", 2, Id="7")], out)
    records = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert list(records[0])[:3] == ["outcome", "state", "email"]
    assert (records[0]["export: Phone"], records[0]["export: Id"]) == ("555", "")
    assert records[1]["export: Id"] == "7"


def test_html_escapes_what_the_export_holds():
    out = io.StringIO()
    write_html([row("gave-up", "<script>@x.io", 1, Name="<b>Eve</b>")], out, title="Incident <1>")
    page = out.getvalue()
    assert "<script>" not in page and "<b>Eve</b>" not in page
    assert "&lt;b&gt;Eve&lt;/b&gt;" in page and "<title>Incident &lt;1&gt;</title>" in page
    assert '<tr class="unreachable">' in page

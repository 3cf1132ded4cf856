"""Previews: one pass renders and writes, and a problem anywhere leaves no preview behind."""

from __future__ import annotations

import codecs
import csv

import pytest

from notify import pipeline
from notify.compose import Outgoing
from notify.errors import OutputError, RenderError
from notify.transports.preview import PreviewWriter
from notify.workspace import Context
from tests.conftest import make_rows

SUBJECT = "Hello {{ customer.name }}\n"


def preview(workspace, **options):
    return pipeline.preview(Context.open(workspace.root, {}), "42", **options)


@pytest.mark.parametrize("count", [30, 4500])  # rendered here, and in worker processes
def test_a_problem_after_the_limit_still_stops_the_preview(workspace, tmp_path, count):
    rows = make_rows(count)
    rows[count - 1][0] = ""  # the last customer has no name, and the subject needs one
    workspace.rows(rows)
    workspace.write("templates/apology/subject.j2", SUBJECT)
    target = tmp_path / "previews"
    with pytest.raises(RenderError) as raised:
        preview(workspace, folder=target, limit=10)
    assert [p.split(" ")[0] for p in raised.value.problems] == [f"customer{count - 1}@example.com"]
    assert list(target.iterdir()) == []  # the ten written before the problem was found


def test_problems_while_writing_are_all_listed_and_nothing_is_left(workspace, tmp_path):
    rows = make_rows(40)
    for index in (3, 25):
        rows[index][0] = ""
    workspace.rows(rows)
    workspace.write("templates/apology/subject.j2", SUBJECT)
    target = tmp_path / "previews"
    with pytest.raises(RenderError, match=r"^2 problem\(s\) stop the send") as raised:
        preview(workspace, folder=target)
    assert [p.split(" ")[0] for p in raised.value.problems] == [
        "customer3@example.com",
        "customer25@example.com",
    ]
    assert list(target.iterdir()) == []


def test_the_error_is_the_one_check_gives(workspace, tmp_path):
    rows = make_rows(12)
    rows[7][0] = ""
    workspace.rows(rows)
    workspace.write("templates/apology/subject.j2", SUBJECT)
    report = pipeline.check(Context.open(workspace.root, {}), "42")
    with pytest.raises(RenderError) as raised:
        preview(workspace, folder=tmp_path / "previews", limit=3)
    assert str(raised.value) == str(pipeline.summarise_problems(report.problems))


def test_a_clean_preview_writes_every_message_once(workspace, tmp_path):
    workspace.rows(make_rows(25, items_each=2))
    target = tmp_path / "previews"
    result = preview(workspace, folder=target)
    assert result.summary.attempted == 25
    assert len(list(target.glob("*.eml"))) == 25
    assert (target / "summary.csv").is_file() and (target / "index.html").is_file()


def test_the_writer_lists_every_message_and_discard_removes_them(tmp_path):
    writer = PreviewWriter(tmp_path / "p")
    writer.open()
    for n, subject in enumerate(["Sorry <Ann>", "Sorry & Bob"]):
        writer.send(
            Outgoing(
                f"k{n}", "from@x.example", f"p{n}@x.example", f"<m{n}>", b"x\r\n", n + 2, subject
            )
        )
    writer.close()
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == [
        "000001-p0_x.example.eml",
        "000002-p1_x.example.eml",
        "index.html",
        "messages",
        "summary.csv",
    ]
    assert sorted(p.name for p in (tmp_path / "p" / "messages").iterdir()) == [
        "000001.html",
        "000002.html",
    ]
    index = (tmp_path / "p" / "index.html").read_text(encoding="utf-8")
    assert "2 messages written; nothing has left." in index
    assert index.count('<tr><td class="num muted index">') == 2
    assert "Sorry &lt;Ann&gt;" in index and "Sorry &amp; Bob" in index
    assert 'href="messages/000002.html"' in index
    with (tmp_path / "p" / "summary.csv").open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[1:] == [
        ["000001-p0_x.example.eml", "p0@x.example", "Sorry <Ann>", "2", "<m0>", ""],
        ["000002-p1_x.example.eml", "p1@x.example", "Sorry & Bob", "3", "<m1>", ""],
    ]
    writer.discard()
    assert list((tmp_path / "p").iterdir()) == []


def test_the_summary_opens_in_a_spreadsheet_without_running_a_formula(workspace, tmp_path):
    workspace.rows([['=HYPERLINK("http://x")', "ann@example.com", "", "A-1", "1"]])
    workspace.write("templates/apology/subject.j2", "{{ customer.name }}\n")
    preview(workspace, folder=tmp_path / "p")
    summary = tmp_path / "p" / "summary.csv"
    assert summary.read_bytes().startswith(codecs.BOM_UTF8)
    with summary.open(encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["file", "to", "subject", "source_row", "message_id", "attachments"]
    assert rows[1][2] == '\'=HYPERLINK("http://x")'


def test_a_preview_folder_under_a_file_is_one_line(workspace, tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError) as raised:
        preview(workspace, folder=tmp_path / "file" / "previews")
    assert str(raised.value) == (
        f"cannot write previews to {tmp_path}/file/previews: it, or a folder above it, is a "
        "file; choose another --preview-dir"
    )

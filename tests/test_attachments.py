"""Attachments: the incident's files and each customer's, checked first, sent byte for byte."""

from __future__ import annotations

import csv
import email
import email.policy
import os
from email.message import EmailMessage
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from notify import pipeline
from notify.attachments import Attachments, encode_part, visible_name
from notify.errors import AttachmentError
from notify.incident import load_incident
from notify.models import Recipient
from notify.workspace import Context
from tests.conftest import DEFAULT_MANIFEST, HEADER
from tests.smtp_server import SmtpServer

INVOICE_HEADER = [*HEADER, "Invoice File"]
LONG_NAME = "Rechnung März 2026 für Zoë O'Brien — korrigierte Fassung Nummer 12.pdf"


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def manifest(*, shared: list[str] | None = None, column: bool = True) -> str:
    text = DEFAULT_MANIFEST
    if shared is not None:
        listed = ", ".join(f'"{path}"' for path in shared)
        text = text.replace("[source]", f"attachments = [{listed}]\n\n[source]")
    if column:
        text = text.replace('phone = "Phone"', 'phone = "Phone"\nattachment = "Invoice File"')
    return text


def pdf(size: int, seed: int = 0) -> bytes:
    """Bytes that start like a PDF and hold every byte value."""
    body = bytes((n * 7 + seed) % 256 for n in range(size))
    return b"%PDF-1.4\n" + body


@pytest.fixture
def invoices(workspace):
    """The default workspace with a shared FAQ and per-customer invoices: Ann has two rows,
    each with its own invoice; Bob's cell names two files; Zoë's has a long non-ASCII name."""
    files = {
        "data/faq.pdf": pdf(200_000),
        "data/invoices/A-1.pdf": pdf(3000, 1),
        "data/invoices/A-3.pdf": pdf(4000, 2),
        "data/invoices/B-2.pdf": pdf(5000, 3),
        "data/invoices/B-2 terms.txt": b"Terms, plain text.\n",
        f"data/invoices/{LONG_NAME}": pdf(6000, 4),
    }
    for path, content in files.items():
        workspace.write(path, content)
    workspace.write("incidents/42.toml", manifest(shared=["data/faq.pdf"]))
    workspace.rows(
        [
            ["Ann Lee", "ann@example.com", "", "A-1", "49.00", "data/invoices/A-1.pdf"],
            [
                "Bob Stone",
                "bob@example.com",
                "",
                "A-2",
                "19.00",
                "data/invoices/B-2.pdf; data/invoices/B-2 terms.txt",
            ],
            ["Ann Lee", "ANN@example.com", "", "A-3", "5.00", "data/invoices/A-3.pdf"],
            ["Zoë O'Brien", "zoe@example.org", "", "A-4", "7.50", f"data/invoices/{LONG_NAME}"],
            ["Max Mustermann", "max@example.net", "", "A-5", "1.00", ""],
        ],
        header=INVOICE_HEADER,
    )
    return files


def attached(message: EmailMessage) -> list[tuple[str | None, str, bytes]]:
    return [
        (part.get_filename(), part.get_content_type(), part.get_content())
        for part in message.iter_attachments()
    ]


def test_shared_and_per_customer_files_reach_the_relay_byte_for_byte(
    workspace, invoices, run_cli, smtp_server
):
    workspace.smtp(smtp_server)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    received = {m.rcpt_tos[0]: parse(m.data) for m in smtp_server.messages}
    assert sorted(received) == [
        "ann@example.com",
        "bob@example.com",
        "max@example.net",
        "zoe@example.org",
    ]
    faq = ("faq.pdf", "application/pdf", invoices["data/faq.pdf"])
    ann = received["ann@example.com"]
    assert ann.get_content_type() == "multipart/mixed"
    assert [p.get_content_type() for p in ann.iter_parts()][0] == "multipart/alternative"
    assert "order A-3: 5.00" in ann.get_body(("plain",)).get_content()
    assert attached(ann) == [
        faq,
        ("A-1.pdf", "application/pdf", invoices["data/invoices/A-1.pdf"]),
        ("A-3.pdf", "application/pdf", invoices["data/invoices/A-3.pdf"]),
    ]
    assert attached(received["bob@example.com"]) == [
        faq,
        ("B-2.pdf", "application/pdf", invoices["data/invoices/B-2.pdf"]),
        ("B-2 terms.txt", "text/plain", "Terms, plain text.\n"),
    ]
    assert attached(received["zoe@example.org"]) == [
        faq,
        (LONG_NAME, "application/pdf", invoices[f"data/invoices/{LONG_NAME}"]),
    ]
    assert attached(received["max@example.net"]) == [faq]
    for message in smtp_server.messages:
        assert all(len(line) <= 78 for line in message.data.split(b"\r\n"))


def test_previews_carry_the_files_and_the_index_lists_them(workspace, invoices, run_cli):
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 0, result.output
    folder = workspace.root / "previews" / "incident-42"
    ann = parse((folder / "000001-ann_example.com.eml").read_bytes())
    assert [name for name, _, _ in attached(ann)] == ["faq.pdf", "A-1.pdf", "A-3.pdf"]
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert '<td data-label="Files">faq.pdf; A-1.pdf; A-3.pdf</td>' in index
    with (folder / "summary.csv").open(encoding="utf-8", newline="") as handle:
        summary = {row["to"]: row["attachments"] for row in csv.DictReader(handle)}
    assert summary["bob@example.com"] == "faq.pdf; B-2.pdf; B-2 terms.txt"
    assert summary["max@example.net"] == "faq.pdf"


def test_a_shared_file_is_encoded_once_for_every_message(workspace, invoices):
    incident = load_incident(Context.open(workspace.root, {}), "42")
    files = incident.composer.attachments
    assert files is not None
    first, *others = [files.parts(r)[0] for r in incident.cleaned.recipients]
    assert first.name == "faq.pdf" and all(part is first for part in others)
    messages = list(incident.outgoing(incident.cleaned.recipients))
    assert all(first.data in message.data for message in messages)


def test_a_customer_file_named_twice_is_encoded_once(tmp_path):
    (tmp_path / "terms.pdf").write_bytes(pdf(100))
    files = Attachments(tmp_path, [], "Terms")
    one, two = (
        Recipient(f"{n}@example.com", f"{n}@example.com", {"attachment": "terms.pdf"}, [{}], [n])
        for n in (2, 3)
    )
    assert files.parts(one)[0] is files.parts(two)[0]


def test_a_missing_customer_file_stops_the_check_with_customer_row_and_column(
    workspace, invoices, run_cli
):
    os.remove(workspace.root / "data/invoices/A-3.pdf")
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: 1 problem(s) stop the send; nothing was sent. First: ann@example.com "
        "(data/affected.csv row 2), column \"Invoice File\": file 'data/invoices/A-3.pdf' "
        "not found; fix the path in the export or add the file"
    )


@pytest.mark.parametrize(
    "path",
    ["../outside.pdf", "data/../../outside.pdf", "{outside}", "data/invoices/link.pdf"],
    ids=["dot-dot", "dot-dot-inside", "absolute", "symlink"],
)
def test_a_file_outside_the_workspace_is_refused(workspace, invoices, run_cli, path):
    outside = workspace.root.parent / "outside.pdf"
    outside.write_bytes(pdf(10))
    (workspace.root / "data/invoices/link.pdf").symlink_to(outside)
    path = path.format(outside=outside)
    workspace.rows(
        [["Ann Lee", "ann@example.com", "", "A-1", "49.00", path]], header=INVOICE_HEADER
    )
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: 1 problem(s) stop the send; nothing was sent. First: ann@example.com "
        f'(data/affected.csv row 2), column "Invoice File": file {path!r} is outside the '
        f"workspace {workspace.root}; fix the path in the export or add the file"
    )
    assert list((workspace.root / "previews" / "incident-42").iterdir()) == []


def test_a_folder_is_not_a_file(workspace, invoices, run_cli):
    workspace.rows(
        [["Ann Lee", "ann@example.com", "", "A-1", "49.00", "data/invoices"]],
        header=INVOICE_HEADER,
    )
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.stderr.strip().endswith(
        'First: ann@example.com (data/affected.csv row 2), column "Invoice File": '
        "'data/invoices' is not a file; fix the path in the export or add the file"
    )


def test_a_missing_incident_file_names_the_manifest(workspace, invoices, run_cli):
    workspace.write("incidents/42.toml", manifest(shared=["data/faq.pdf", "data/nope.pdf"]))
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        "Error: incidents/42.toml: attachments: file 'data/nope.pdf' not found; "
        "add the file or fix attachments ="
    )


def test_attachments_must_be_a_list_of_paths(workspace, run_cli):
    workspace.write(
        "incidents/42.toml", DEFAULT_MANIFEST.replace("[source]", 'attachments = "x"\n[source]')
    )
    result = run_cli(workspace, "check", "--incident", "42")
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        'Error: incidents/42.toml: attachments must list files, like attachments = ["data/faq.pdf"]'
    )


def test_a_message_over_the_relays_size_stops_the_send_before_anything_leaves(
    workspace, invoices, run_cli
):
    workspace.write("data/invoices/B-2.pdf", pdf(400_000, 3))
    with SmtpServer("none", size_limit=500_000) as server:
        workspace.smtp(server)
        result = run_cli(workspace, "send", "--incident", "42", "--yes")
        assert server.messages == []
        assert [c for c in server.commands if c.startswith(("MAIL", "RCPT", "DATA"))] == []
    assert result.exit_code == 3
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: 1 message(s) too big for the relay; nothing was sent. First: bob@example.com "
        f"(data/affected.csv row 3): the message is 0.8 MB, over the 0.5 MB the relay at "
        f"127.0.0.1:{server.port} takes (SIZE 500000); attach fewer or smaller files"
    )
    status = run_cli(workspace, "status", "--incident", "42", "--json")
    assert '"accepted": 0' in status.output


def test_a_test_send_is_held_to_the_relays_size_too(workspace, invoices, run_cli):
    with SmtpServer("none", size_limit=100_000) as server:
        workspace.smtp(server)
        result = run_cli(workspace, "send", "--incident", "42", "--to", "me@acme.example")
        assert server.messages == []
    assert result.exit_code == 3
    assert result.stderr.strip().startswith(
        "Error: 1 message(s) too big for the relay; nothing was sent. First: ann@example.com"
    )


def test_messages_within_the_size_go(workspace, invoices, run_cli):
    with SmtpServer("none", size_limit=1_000_000) as server:
        workspace.smtp(server)
        result = run_cli(workspace, "send", "--incident", "42", "--yes")
        assert len(server.messages) == 4
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("faq.pdf", 'filename="faq.pdf"'),
        ("a b;c.pdf", 'filename="a b;c.pdf"'),
        ('say "hi".txt', "filename*=utf-8''say%20%22hi%22.txt"),
        ("Zoë.pdf", "filename*=utf-8''Zo%C3%AB.pdf"),
    ],
)
def test_file_names_are_quoted_or_rfc2231_encoded(name: str, header: str):
    part = encode_part(name, b"x")
    assert header in part.decode("ascii")
    parsed = parse(b"MIME-Version: 1.0\r\n" + part)
    assert parsed.get_filename() == name
    assert parsed.get_content_disposition() == "attachment"


def test_a_long_name_is_continued_without_splitting_an_escape():
    part = encode_part(LONG_NAME, b"x").decode("ascii")
    assert "filename*0*=utf-8''" in part and "filename*1*=" in part
    assert all(len(line) <= 78 for line in part.split("\r\n"))
    assert parse(b"MIME-Version: 1.0\r\n" + part.encode()).get_filename() == LONG_NAME


def test_an_unknown_type_is_octet_stream():
    part = encode_part("data.zzz-unknown", b"\x00\x01")
    assert part.startswith(b"Content-Type: application/octet-stream;")


def test_checking_resolves_without_encoding(tmp_path: Path):
    files = Attachments(tmp_path, [], "Invoice")
    lost = Recipient("a@example.com", "a@example.com", {"attachment": "x.pdf"}, [{}], [7], "e.csv")
    with pytest.raises(AttachmentError, match=r"^a@example.com \(e.csv row 7\), column"):
        files.check(lost)


@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=150))
def test_any_file_name_reads_back_as_shown(name: str):
    part = encode_part(visible_name(name), b"%PDF")
    assert all(len(line) <= 78 for line in part.split(b"\r\n"))
    parsed = parse(b"MIME-Version: 1.0\r\n" + part)
    assert parsed.get_filename() == visible_name(name)
    assert parsed.get_content() == b"%PDF"


def test_a_name_with_control_characters_is_shown_without_them():
    assert visible_name(" Rechnung\r\nMärz.pdf ") == "Rechnung__März.pdf"
    assert visible_name("\t") == "attachment"


def test_the_incidents_own_files_are_part_of_the_fingerprint(workspace, invoices):
    def fingerprint() -> str:
        incident = load_incident(Context.open(workspace.root, {}), "42")
        return pipeline.fingerprints(incident)[0]

    before = fingerprint()
    workspace.write("data/faq.pdf", pdf(1000))
    assert fingerprint() != before

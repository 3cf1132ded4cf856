"""Decoding exports: a UTF-8 file with a few Windows-1252 lines, and files that are no text."""

from __future__ import annotations

import codecs
import gzip
import sqlite3
from pathlib import Path

import pytest

from notify.cleaning.clean import BIDI_CONTROL, LEGACY_ENCODING, clean
from notify.errors import SourceError
from notify.models import NOTE_COLUMN, ROW_COLUMN, SourceSpec
from notify.sources.encodings import decode
from notify.sources.load import load_sources

HEADER = "Customer,Email Address,order_id\n"
NOTE = (
    "line {} is not UTF-8 like the rest of the file, so it was read as Windows-1252; "
    "check its names read right"
)
EXPORT_AGAIN = "export the affected customers again as CSV and check [source] path"


def load(root: Path, *specs: SourceSpec):
    return load_sources(list(specs), root=root, incident_id="42", environ={})


def refused(root: Path, name: str) -> str:
    with pytest.raises(SourceError) as info:
        load(root, SourceSpec(path=name))
    return str(info.value)


def mixed_export() -> bytes:
    """UTF-8, but for line 3 pasted from an old system, and a two-line record (4-5) whose
    second line is Windows-1252 too."""
    return (
        HEADER.encode()
        + "Zoë Müller,zoe@example.com,A-1\n".encode()
        + "José Núñez,jose@example.com,A-2\n".encode("cp1252")
        + '"Ærø\n(Bjørn)",bjorn@example.com,A-3\r\n'.encode("cp1252")
        + "Łukasz Żółć,lukasz@example.com,A-4\n".encode()
    )


@pytest.mark.parametrize("bom", [b"", codecs.BOM_UTF8])
def test_only_the_lines_that_are_not_utf8_are_read_as_windows_1252(
    tmp_path: Path, bom: bytes
) -> None:
    (tmp_path / "x.csv").write_bytes(bom + mixed_export())
    frame = load(tmp_path, SourceSpec(path="x.csv"))
    assert frame["Customer"].tolist() == ["Zoë Müller", "José Núñez", "Ærø\n(Bjørn)", "Łukasz Żółć"]
    assert frame[ROW_COLUMN].tolist() == [2, 3, 4, 6]
    assert frame[NOTE_COLUMN].tolist() == ["", NOTE.format(3), NOTE.format(4), ""]


def test_the_lines_are_listed_for_review_and_still_sent(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(mixed_export())
    frame = load(tmp_path, SourceSpec(path="x.csv"))
    result = clean(frame, columns={"email": "Email Address", "name": "Customer"}, items={})
    assert len(result.recipients) == 4
    assert [
        (r.email, r.kind, r.detail, r.row) for r in result.review if r.kind == LEGACY_ENCODING
    ] == [
        ("jose@example.com", LEGACY_ENCODING, NOTE.format(3), 3),
        ("bjorn@example.com", LEGACY_ENCODING, NOTE.format(4), 4),
    ]


def test_a_source_without_notes_stacks_with_one_that_has_them(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(mixed_export())
    (tmp_path / "y.csv").write_text(HEADER + "Ann,ann@example.com,A-9\n", encoding="utf-8")
    frame = load(tmp_path, SourceSpec(path="y.csv"), SourceSpec(path="x.csv"))
    assert frame[NOTE_COLUMN].tolist() == ["", "", NOTE.format(3), NOTE.format(4), ""]
    assert list(frame.columns)[-3:] == [ROW_COLUMN, "__source__", NOTE_COLUMN]


def test_a_file_with_no_utf8_text_is_windows_1252_throughout_and_not_listed(
    tmp_path: Path,
) -> None:
    (tmp_path / "x.csv").write_bytes((HEADER + "Zoë,z@x.com,1\nJosé,j@x.com,2\n").encode("cp1252"))
    frame = load(tmp_path, SourceSpec(path="x.csv"))
    assert frame["Customer"].tolist() == ["Zoë", "José"]
    assert NOTE_COLUMN not in frame.columns


def test_a_big_mixed_file_keeps_every_line_and_notes_only_the_odd_ones(tmp_path: Path) -> None:
    """Lines around the 1 MiB chunks the decoder reads, in CRLF, with a Windows-1252 line
    at the very start and the very end."""
    lines = [f"Zoë {n},z{n}@example.com,A-{n}\r\n".encode() for n in range(60_000)]
    odd = {0, 25_000, 39_999, 59_999}
    for n in odd:
        lines[n] = lines[n].decode().encode("cp1252")
    (tmp_path / "x.csv").write_bytes(HEADER.encode() + b"".join(lines))
    frame = load(tmp_path, SourceSpec(path="x.csv"))
    assert len(frame) == 60_000
    assert frame["Customer"].iloc[[0, 25_000, 59_999]].tolist() == [
        "Zoë 0",
        "Zoë 25000",
        "Zoë 59999",
    ]
    noted = frame[frame[NOTE_COLUMN] != ""][ROW_COLUMN].tolist()
    assert noted == sorted(n + 2 for n in odd)


def test_a_line_that_is_neither_utf8_nor_windows_1252_names_its_byte(tmp_path: Path) -> None:
    data = HEADER.encode() + "Zoë,z@x.com,1\n".encode() + b"Bo\x81,b@x.com,2\n"
    (tmp_path / "x.csv").write_bytes(data)
    offset = data.index(b"\x81")
    assert refused(tmp_path, "x.csv") == (
        f"x.csv: byte 0x81 at offset {offset} (line 3) is not valid UTF-8 or "
        'Windows-1252 text; save the export as CSV (UTF-8), or set encoding = "..." in [source]'
    )


def test_an_encoding_setting_still_decides_the_whole_file(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(mixed_export())
    frame = load(tmp_path, SourceSpec(path="x.csv", encoding="latin-1"))
    assert frame["Customer"].iloc[0] == "ZoÃ« MÃ¼ller"  # as asked
    assert NOTE_COLUMN not in frame.columns


def test_a_clean_file_is_read_in_place(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(HEADER + "Zoë,z@x.com,1\n", encoding="utf-8")
    decoded = decode(tmp_path / "x.csv", "x.csv", None)
    assert (decoded.encoding, decoded.repaired, decoded.legacy_lines) == ("utf-8", None, ())


def test_bidirectional_controls_in_a_name_are_listed_and_sent_as_they_are(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_text(
        HEADER
        + "Ann \u202eeeL,ann@example.com,A-1\n"
        + "Ann \u202eeeL,ann@example.com,A-2\n"
        + "Bob,bob@example.com,\u2066A-3\u2069\n"
        + "Eve \u200f,not-an-address,A-4\n",
        encoding="utf-8",
    )
    frame = load(tmp_path, SourceSpec(path="x.csv"))
    result = clean(
        frame, columns={"email": "Email Address", "name": "Customer"}, items={"order": "order_id"}
    )
    assert result.recipients[0].fields["name"] == "Ann \u202eeeL"
    assert [(r.email, r.kind, r.detail, r.row) for r in result.review] == [
        ("ann@example.com", BIDI_CONTROL, "name holds U+202E RIGHT-TO-LEFT OVERRIDE, which can "
         "make it display in another order; sent as it is", 2),
        ("bob@example.com", BIDI_CONTROL, "order holds U+2066 LEFT-TO-RIGHT ISOLATE, which can "
         "make it display in another order; sent as it is", 4),
    ]  # fmt: skip


# --- files that are not text ----------------------------------------------------------------


def _sqlite_bytes(tmp_path: Path) -> bytes:
    with sqlite3.connect(tmp_path / "crm.db") as connection:
        connection.execute("CREATE TABLE t (a)")
    connection.close()
    return (tmp_path / "crm.db").read_bytes()


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda _: b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(600),
         "it is an old Office file (.xls); save it as .xlsx or CSV"),
        (lambda _: b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", f"it is a PDF document; {EXPORT_AGAIN}"),
        (lambda _: gzip.compress(HEADER.encode()),
         "it is gzip-compressed; unpack it and set [source] path to the file inside"),
        (_sqlite_bytes, 'it is a SQLite database; rename it to .db and add query = "SELECT ..."'),
        (lambda _: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", f"it is a PNG image; {EXPORT_AGAIN}"),
        (lambda _: bytes(range(1, 9)) * 40 + b"\n" + bytes(range(14, 31)) * 20,
         f"it holds control characters such as U+0001; {EXPORT_AGAIN}"),
    ],
)  # fmt: skip
def test_a_binary_file_named_csv_is_not_a_text_export(tmp_path: Path, make, message: str) -> None:
    (tmp_path / "x.csv").write_bytes(make(tmp_path))
    assert refused(tmp_path, "x.csv") == f"x.csv is not a text export: {message}"


def test_a_binary_file_with_nul_bytes_is_named_by_its_first_nul(tmp_path: Path) -> None:
    (tmp_path / "x.csv").write_bytes(b"\x7fELF\x02\x01\x01" + bytes(9) + b"\x02\x00>")
    assert refused(tmp_path, "x.csv") == (
        "x.csv: byte 0x00 at offset 7 (line 1) is never in a text export, so the file is binary "
        f"or damaged; {EXPORT_AGAIN}"
    )

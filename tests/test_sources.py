"""Every export an operator is handed: files in each format and encoding, and their error lines."""

from __future__ import annotations

import codecs
import datetime as dt
import json
import os
from collections.abc import Callable
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import openpyxl
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, SourceSpec
from notify.sources.load import load_sources

Write = Callable[[str, "str | bytes"], Path]
AGAIN = "export the affected customers again"


def load(root: Path, *specs: SourceSpec, **spec: str) -> pd.DataFrame:
    return load_sources(
        list(specs) or [SourceSpec(**spec)], root=root, incident_id="42", environ={}
    )


def refused(root: Path, **spec: str) -> str:
    with pytest.raises(SourceError) as info:
        load(root, **spec)
    return str(info.value)


def rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")


@pytest.fixture
def write(tmp_path: Path) -> Write:
    """Write bytes (or UTF-8 text) under the workspace and return the path."""

    def write(relative: str, content: str | bytes) -> Path:
        path = tmp_path / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return write


# --- delimited text: encodings and delimiters -------------------------------------------------


def test_utf8_csv_gives_text_columns_with_line_numbers(tmp_path: Path, write: Write) -> None:
    write(
        "data/x.csv", "Customer,Email Address,amount\nZoë,zoe@example.com,49.90\nBob,bob@x.com,\n"
    )
    frame = load(tmp_path, path="data/x.csv")
    assert rows(frame) == [
        {"Customer": "Zoë", "Email Address": "zoe@example.com", "amount": "49.90",
         ROW_COLUMN: 2, SOURCE_COLUMN: "data/x.csv"},
        {"Customer": "Bob", "Email Address": "bob@x.com", "amount": "",
         ROW_COLUMN: 3, SOURCE_COLUMN: "data/x.csv"},
    ]  # fmt: skip
    assert list(frame.dtypes[:3]) == [object] * 3
    assert frame[ROW_COLUMN].dtype == "int64"


def test_utf8_bom_is_not_part_of_the_first_column_name(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", codecs.BOM_UTF8 + "Email,Name\nz@x.com,Zoë\n".encode())
    assert list(load(tmp_path, path="data/x.csv").columns[:2]) == ["Email", "Name"]


@pytest.mark.parametrize("bom, codec", [(codecs.BOM_UTF16_LE, "utf-16-le"),
                                        (codecs.BOM_UTF16_BE, "utf-16-be")])  # fmt: skip
def test_excel_unicode_text_utf16_with_tabs(
    tmp_path: Path, write: Write, bom: bytes, codec: str
) -> None:
    text = "Name\tEmail\tCity\r\nŁukasz Żółć\tl@x.pl\tŁódź\r\nZoë\tz@x.com\t\r\n"
    write("data/unicode.txt", bom + text.encode(codec))
    frame = load(tmp_path, path="data/unicode.txt")
    assert rows(frame) == [
        {"Name": "Łukasz Żółć", "Email": "l@x.pl", "City": "Łódź", ROW_COLUMN: 2,
         SOURCE_COLUMN: "data/unicode.txt"},
        {"Name": "Zoë", "Email": "z@x.com", "City": "", ROW_COLUMN: 3,
         SOURCE_COLUMN: "data/unicode.txt"},
    ]  # fmt: skip


def test_utf16_without_bom_is_recognised(tmp_path: Path, write: Write) -> None:
    write("data/x.txt", "Name\tEmail\nZoë\tz@x.com\n".encode("utf-16-le"))
    assert load(tmp_path, path="data/x.txt")["Name"].tolist() == ["Zoë"]


def test_semicolon_windows_1252_export_with_accents(tmp_path: Path, write: Write) -> None:
    text = (
        "Name;E-Mail;Betrag\r\n"
        "Zoë Müller;zoe@x.de;49,90\r\n"
        "François Légaré;f@x.fr;12,00\r\n"
        "José Núñez;j@x.es;€ 5,00\r\n"
    )
    write("data/export.csv", text.encode("cp1252"))
    frame = load(tmp_path, path="data/export.csv")
    assert frame[["Name", "E-Mail", "Betrag"]].values.tolist() == [
        ["Zoë Müller", "zoe@x.de", "49,90"],
        ["François Légaré", "f@x.fr", "12,00"],
        ["José Núñez", "j@x.es", "€ 5,00"],
    ]
    assert frame[ROW_COLUMN].tolist() == [2, 3, 4]


def test_latin1_export_reads_as_its_letters(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "name,email\nStraße Weiß,s@x.de\nAnaïs,a@x.fr\n".encode("latin-1"))
    assert load(tmp_path, path="data/x.csv")["name"].tolist() == ["Straße Weiß", "Anaïs"]


@pytest.mark.parametrize(
    "name, text",
    [
        ("data/x.tsv", "a\tb\n1\t2,5\n"),
        ("data/x.txt", "a|b\n1|2,5\n"),
        ("data/x.csv", "a;b\n1;2,5\n"),
        ("data/x.csv", 'a,b\n1,"2,5"\n'),
    ],
)
def test_delimiter_is_detected(tmp_path: Path, write: Write, name: str, text: str) -> None:
    write(name, text)
    assert rows(load(tmp_path, path=name).drop(columns=SOURCE_COLUMN)) == [
        {"a": "1", "b": "2,5", ROW_COLUMN: 2}
    ]


def test_encoding_and_delimiter_settings_override_detection(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a;b\n1;2\n".encode("cp1252"))
    frame = load(tmp_path, path="data/x.csv", delimiter=",", encoding="latin-1")
    assert frame["a;b"].tolist() == ["1;2"]
    frame = load(tmp_path, path="data/x.csv", delimiter="semicolon")
    assert frame["b"].tolist() == ["2"]
    write("data/tab.txt", "a\tb\n1\t2\n".encode("utf-16"))
    assert load(tmp_path, path="data/tab.txt", delimiter="tab", encoding="utf-16")[
        "b"
    ].tolist() == ["2"]


def test_quoted_fields_keep_newlines_and_delimiters_and_rows_keep_their_lines(
    tmp_path: Path, write: Write
) -> None:
    write(
        "data/x.csv",
        'name,email,note\n"Smith, Ann",ann@x.com,"line one\nline two"\n'
        'Bob,bob@x.com,"say ""hi"""\n"Multi\r\nline\r\nname",m@x.com,x\nEve,eve@x.com,last\n',
    )
    frame = load(tmp_path, path="data/x.csv")
    assert frame["name"].tolist() == ["Smith, Ann", "Bob", "Multi\r\nline\r\nname", "Eve"]
    assert frame["note"].tolist() == ["line one\nline two", 'say "hi"', "x", "last"]
    assert frame[ROW_COLUMN].tolist() == [2, 4, 5, 8]


def test_blank_and_empty_rows_are_skipped_without_shifting_line_numbers(
    tmp_path: Path, write: Write
) -> None:
    write("data/x.csv", "a,b,\n1,2,\n\n   \n3,4,\n,,\n\n")
    frame = load(tmp_path, path="data/x.csv")
    assert rows(frame.drop(columns=SOURCE_COLUMN)) == [
        {"a": "1", "b": "2", ROW_COLUMN: 2},
        {"a": "3", "b": "4", ROW_COLUMN: 5},
    ]


def test_old_mac_line_endings(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a,b\r1,2\r3,4\r")
    assert load(tmp_path, path="data/x.csv")[ROW_COLUMN].tolist() == [2, 3]


def test_header_names_are_stripped(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", " Email , Name ,Unnamed\nz@x.com,Zoë,x\n")
    assert list(load(tmp_path, path="data/x.csv").columns) == [
        "Email", "Name", "Unnamed", ROW_COLUMN, SOURCE_COLUMN
    ]  # fmt: skip


@pytest.mark.parametrize(
    "header, message",
    [
        ("Name,Email,Phone,Notes,Email", 'columns 2 and 5 are both named "Email"'),
        (" Email ,Name,email", 'columns 1 and 3 are named "Email" and "email", which notify '
         "cannot tell apart"),
        ("E-Mail;Name;E-Mail", 'columns 1 and 3 are both named "E-Mail"'),
    ],
)  # fmt: skip
def test_two_columns_with_one_name_are_refused(
    tmp_path: Path, write: Write, header: str, message: str
) -> None:
    """The manifest could map only one of them; the other's addresses would be ignored."""
    sep = ";" if ";" in header else ","
    width = header.count(sep)
    write("data/x.csv", f"{header}\n" + sep.join(["z@x.com"] * (width + 1)) + "\n")
    assert refused(tmp_path, path="data/x.csv") == (
        f"data/x.csv: {message}; rename one in the export"
    )


def test_a_large_file_with_one_multiline_record_near_the_end(tmp_path: Path, write: Write) -> None:
    lines = ["id,email,note"] + [f"{i},u{i}@x.com,n" for i in range(50_000)]
    lines.insert(49_000, '49000b,late@x.com,"two\nlines"')
    write("data/big.csv", "\n".join(lines) + "\n")
    frame = load(tmp_path, path="data/big.csv")
    assert len(frame) == 50_001
    assert frame[ROW_COLUMN].iloc[[0, 48_998, 48_999, 49_000, -1]].tolist() == [
        2, 49_000, 49_001, 49_003, 50_003
    ]  # fmt: skip
    assert frame["id"].iloc[[48_999, 49_000]].tolist() == ["49000b", "48999"]


# --- delimited text: error lines --------------------------------------------------------------


def test_too_many_fields_names_the_line(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", 'a,b,c\n1,"x\ny",3\n4,5,6\nSmith, John,j@x.com,9\n')
    assert refused(tmp_path, path="data/x.csv") == (
        'data/x.csv line 5: expected 3 fields, found 4 with delimiter ","; quote values that '
        'contain it, or set delimiter = ";" (or the right one) in [source]'
    )


def test_too_few_fields_names_the_line(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a;b;c\n1;2;3\nMain St\n")
    assert refused(tmp_path, path="data/x.csv").startswith(
        'data/x.csv line 3: expected 3 fields, found 1 with delimiter ";"; '
    )


def test_truncated_quoted_field_names_the_line_it_starts_on(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", 'a,b\n1,2\n3,"never\nclosed\n')
    assert refused(tmp_path, path="data/x.csv") == (
        "data/x.csv line 3: a quoted field starts in this row and is never closed; close the "
        'quote, or double a " inside a value (""), or export the file again'
    )


def test_text_after_a_closing_quote_is_refused(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", 'a,b\n1,2\n"He said "hi"",x\n')
    assert refused(tmp_path, path="data/x.csv") == (
        'data/x.csv line 3: text follows a closing quote; double every " inside a quoted value '
        '(""), or export the file again'
    )


def test_bytes_in_no_supported_encoding_are_named_with_offset_and_line(
    tmp_path: Path, write: Write
) -> None:
    data = "name;email\nZoë;z@x\n".encode("cp1252") + b"Bo\x81;b@x\n"
    write("data/bad.csv", data)
    offset = data.index(b"\x81")
    assert refused(tmp_path, path="data/bad.csv") == (
        f"data/bad.csv: byte 0x81 at offset {offset} (line 3) is not valid UTF-8 or "
        'Windows-1252 text; save the export as CSV (UTF-8), or set encoding = "..." in [source]'
    )


def test_a_nul_byte_is_not_text(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", b"a,b\n1,2\n3,\x00\n")
    assert refused(tmp_path, path="data/x.csv") == (
        "data/x.csv: byte 0x00 at offset 10 (line 3) is never in a text export, so the file is "
        "binary or damaged; export the affected customers again as CSV and check [source] path"
    )


def test_wrong_encoding_setting_names_the_first_bad_byte(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a\nZoë\n".encode("cp1252"))
    assert refused(tmp_path, path="data/x.csv", encoding="utf-8").startswith(
        "data/x.csv: byte 0xEB at offset 4 (line 2) is not valid UTF-8 or Windows-1252 text"
    )


@pytest.mark.parametrize(
    "content, message",
    [
        ("Email,Name\n", f"data/x.csv has a header but no rows; {AGAIN}"),
        ("Email,Name\n\n,\n", f"data/x.csv has a header but no rows; {AGAIN}"),
        ("", f"data/x.csv is empty; {AGAIN}"),
        ("\nEmail\n", "data/x.csv line 1 is empty; the column names must be on the first line"),
        (b"PK\x03\x04", "data/x.csv is a zip file, probably an Excel workbook; rename it to .xlsx"),
    ],
)  # fmt: skip
def test_empty_and_misnamed_exports(
    tmp_path: Path, write: Write, content: str | bytes, message: str
) -> None:
    write("data/x.csv", content)
    assert refused(tmp_path, path="data/x.csv") == message


def test_missing_file_folder_and_unknown_format(tmp_path: Path, write: Write) -> None:
    assert refused(tmp_path, path="data/none.csv") == (
        "data/none.csv not found; put the export there or fix [source] path"
    )
    (tmp_path / "data" / "folder.csv").mkdir(parents=True)
    assert refused(tmp_path, path="data/folder.csv") == (
        "data/folder.csv is a folder; set [source] path to the export file inside it"
    )
    write("data/x.pdf", b"%PDF")
    assert refused(tmp_path, path="data/x.pdf") == (
        "data/x.pdf: cannot read .pdf; export as .csv, .tsv, .txt, .xlsx, .jsonl or a .sql dump"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a\n1\n").chmod(0)
    assert refused(tmp_path, path="data/x.csv") == (
        "data/x.csv: cannot read it (Permission denied); check the file's permissions"
    )


def test_bad_settings_are_named(tmp_path: Path, write: Write) -> None:
    write("data/x.csv", "a\n1\n")
    assert refused(tmp_path, path="data/x.csv", encoding="klingon") == (
        'data/x.csv: unknown encoding "klingon"; use e.g. encoding = "utf-8", "cp1252" or '
        '"utf-16" in [source]'
    )
    assert refused(tmp_path, path="data/x.csv", delimiter=";;") == (
        'data/x.csv: delimiter ";;" must be one character, or tab, comma, semicolon, pipe '
        "in [source]"
    )


_FIELD = st.text(  # printable text and the line breaks, tabs and quotes exports hold
    st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from('\r\n\t"'), max_size=12
)


def _quoted(field: str, delimiter: str) -> str:
    """Quote a field the way exporters do: only when it must be."""
    if any(mark in field for mark in (delimiter, '"', "\r", "\n")):
        return '"' + field.replace('"', '""') + '"'
    return field


def _passes_as_utf8(line: bytes) -> bool:
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return not line.isascii()


def _line_breaks(text: str) -> int:
    return text.count("\n") + text.count("\r") - text.count("\r\n")


@settings(max_examples=80, deadline=None)
@given(
    body=st.lists(st.lists(_FIELD, min_size=3, max_size=3), min_size=1, max_size=12),
    delimiter=st.sampled_from([",", ";", "\t", "|"]),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_any_written_csv_reads_back_exactly_with_its_line_numbers(
    body: list[list[str]], delimiter: str, encoding: str, newline: str
) -> None:
    """Whatever the values hold (quotes, delimiters, newlines), no row or character is lost."""
    body = [row for row in body if any(row)]
    if encoding == "cp1252":
        body = [[f.encode("cp1252", "replace").decode("cp1252") for f in row] for row in body]
    text = delimiter.join(["first", "second", "third"]) + newline
    starts = []
    for row in body:
        starts.append(_line_breaks(text) + 1)
        text += delimiter.join(_quoted(field, delimiter) for field in row) + newline
    data = text.encode(encoding)
    if encoding == "cp1252":
        # Windows-1252 bytes that also happen to be valid UTF-8 ('Â\xa0' is b'\xc2\xa0')
        # are read as UTF-8, row by row, as they should be: nothing tells the two apart.
        assume(not any(_passes_as_utf8(line) for line in data.splitlines()))
    with TemporaryDirectory() as folder:
        (Path(folder) / "x.csv").write_bytes(data)
        if not body:
            return
        frame = load(Path(folder), path="x.csv")
    assert frame[["first", "second", "third"]].values.tolist() == body
    assert frame[ROW_COLUMN].tolist() == starts


# --- JSON Lines -------------------------------------------------------------------------------


def test_json_lines_objects_become_text_rows(tmp_path: Path, write: Write) -> None:
    lines = [
        {"email": "z@x.com", "amount": 49.90, "count": 2, "vip": True, "note": None},
        {"email": "b@x.com", "tags": ["a", "b"], "address": {"city": "Köln", "zip": 5.5}},
    ]
    text = json.dumps(lines[0]).replace("49.9", "49.90") + "\n\n" + json.dumps(lines[1]) + "\n"
    write("data/x.jsonl", text)
    assert rows(load(tmp_path, path="data/x.jsonl")) == [
        {"email": "z@x.com", "amount": "49.90", "count": "2", "vip": "true", "note": "",
         "tags": "", "address": "", ROW_COLUMN: 1, SOURCE_COLUMN: "data/x.jsonl"},
        {"email": "b@x.com", "amount": "", "count": "", "vip": "", "note": "",
         "tags": '["a", "b"]', "address": '{"city": "Köln", "zip": 5.5}', ROW_COLUMN: 3,
         SOURCE_COLUMN: "data/x.jsonl"},
    ]  # fmt: skip


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"a": 1}\n{"a": 2,}\n', "data/x.jsonl line 2: not valid JSON (Expecting property name "
         "enclosed in double quotes at column 9); fix or remove the line"),
        ('{"a": 1}\n[1, 2]\n', "data/x.jsonl line 2: expected a JSON object {...}, found list; "
         "write one object per line"),
        ("\n\n", "data/x.jsonl has no rows; export the affected customers again"),
        (b'{"a": "\xe9"}\n', "data/x.jsonl: byte 0xE9 at offset 7 (line 1) is not UTF-8, which "
         "JSON Lines must be; export the file again"),
        ('{"email": "a@x.com"}\n{"email": "b@x.com", "name": "B", "email": "c@x.com"}\n',
         'data/x.jsonl line 2: key "email" appears twice in one object; keep one in the export'),
        ('{"Email": "a@x.com"}\n\n{"email": "b@x.com"}\n',
         'data/x.jsonl: key "Email" (line 1) and key "email" (line 3) differ only in case or '
         "spaces; spell each key one way on every line of the export"),
    ],
)  # fmt: skip
def test_json_lines_errors(tmp_path: Path, write: Write, text: str | bytes, message: str) -> None:
    write("data/x.jsonl", text)
    assert refused(tmp_path, path="data/x.jsonl") == message


# --- Excel ------------------------------------------------------------------------------------


def _workbook(path: Path) -> None:
    book = openpyxl.Workbook()
    summary = book.active
    assert summary is not None
    summary.title = "Summary"
    summary["A1"] = "Totals only"
    sheet = book.create_sheet("Customers")
    sheet.append([" Name ", "Email", "Amount", "Paid", "Date", "Count", None])
    sheet.append(["Zoë", "z@x.com", 49.9, True, dt.datetime(2024, 3, 1), 49.0])
    sheet.append(["Bob", "b@x.com", 12, False, dt.datetime(2024, 3, 1, 10, 30), 7.25])
    sheet.append([])
    sheet.append(["Al", "a@x.com", None, None, dt.date(2024, 2, 29), None, "extra"])
    for row in (2, 3, 5):
        sheet.cell(row=row, column=3).number_format = "#,##0.00"
    book.save(path)


def test_xlsx_named_sheet_as_excel_shows_it(tmp_path: Path, write: Write) -> None:
    (tmp_path / "data").mkdir()
    _workbook(tmp_path / "data" / "x.xlsx")
    frame = load(tmp_path, path="data/x.xlsx", sheet="Customers")
    assert rows(frame) == [
        {"Name": "Zoë", "Email": "z@x.com", "Amount": "49.90", "Paid": "true",
         "Date": "2024-03-01", "Count": "49", "Unnamed: 6": "", ROW_COLUMN: 2,
         SOURCE_COLUMN: "data/x.xlsx"},
        {"Name": "Bob", "Email": "b@x.com", "Amount": "12.00", "Paid": "false",
         "Date": "2024-03-01 10:30:00", "Count": "7.25", "Unnamed: 6": "", ROW_COLUMN: 3,
         SOURCE_COLUMN: "data/x.xlsx"},
        {"Name": "Al", "Email": "a@x.com", "Amount": "", "Paid": "", "Date": "2024-02-29",
         "Count": "", "Unnamed: 6": "extra", ROW_COLUMN: 5, SOURCE_COLUMN: "data/x.xlsx"},
    ]  # fmt: skip


def test_xlsx_first_sheet_by_default_and_errors(tmp_path: Path, write: Write) -> None:
    (tmp_path / "data").mkdir()
    _workbook(tmp_path / "data" / "x.xlsx")
    assert refused(tmp_path, path="data/x.xlsx") == (
        "data/x.xlsx sheet 'Summary' has a header but no rows; export the affected customers again"
    )
    assert refused(tmp_path, path="data/x.xlsx", sheet="Kunden") == (
        'data/x.xlsx has no sheet "Kunden"; its sheets are "Summary", "Customers"; '
        'set sheet = "..." in [source]'
    )
    write("data/broken.xlsx", b"not a zip")
    assert refused(tmp_path, path="data/broken.xlsx") == (
        "data/broken.xlsx is not a readable .xlsx workbook; open it in Excel and save it again "
        "as .xlsx or CSV"
    )


def test_xlsx_two_columns_with_one_name_are_named_by_letter(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    book = openpyxl.Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["Name", "Email", "Phone", "Notes", "Email"])
    sheet.append(["Zoë", "z@x.com", "", "", "zoe@x.com"])
    book.save(tmp_path / "data" / "x.xlsx")
    assert refused(tmp_path, path="data/x.xlsx") == (
        "data/x.xlsx sheet 'Sheet': columns B and E are both named \"Email\"; rename one in the "
        "workbook"
    )


# --- several sources --------------------------------------------------------------------------


def test_several_sources_stack_in_order_and_match_columns_by_name(
    tmp_path: Path, write: Write
) -> None:
    write("data/eu.csv", "Email,Name\nz@x.com,Zoë\n")
    write("data/us.jsonl", '{"email": "b@x.com", "phone": "555"}\n')
    frame = load(tmp_path, SourceSpec(path="data/eu.csv"), SourceSpec(path="data/us.jsonl"))
    assert rows(frame) == [
        {"Email": "z@x.com", "Name": "Zoë", "phone": "", ROW_COLUMN: 2,
         SOURCE_COLUMN: "data/eu.csv"},
        {"Email": "b@x.com", "Name": "", "phone": "555", ROW_COLUMN: 1,
         SOURCE_COLUMN: "data/us.jsonl"},
    ]  # fmt: skip

"""Read exports into one DataFrame of strings, each row carrying its source and row number.

    [source] path *.csv *.tsv *.txt   notify.delimited: encoding and delimiter detected
    [source] path *.jsonl             here: one JSON object per line
    [source] path *.xlsx              here: the first sheet, or sheet = "..."
    [source] path *.sql + query       notify.dumps loads the dump, then the query runs on it
    [source] path *.db + query        the query on a SQLite file, read-only
    [source] url + query              notify.sql_sources: a live database, read-only

Every data column holds str ("" for a missing value); ROW_COLUMN is the row number a person
would point at (the line in a text file, the row in a sheet, the result row of a query).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import sqlite3
import zipfile
from collections.abc import Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
from openpyxl.utils.exceptions import InvalidFileException

from notify.cells import cell_text, header_names, text_frame
from notify.delimited import read_delimited
from notify.dumps import dump_tables, load_dump
from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN, SourceSpec
from notify.sql_sources import check_read_only, open_sqlite, query_sqlite, read_database

_TEXT = {".csv", ".tsv", ".txt"}
_SQLITE = {".db", ".sqlite", ".sqlite3"}
_DECIMALS = re.compile(r"0\.(0+)")  # "0.00", "#,##0.00": the digits Excel shows


def load_sources(
    specs: Sequence[SourceSpec],
    *,
    root: Path,
    incident_id: str,
    environ: Mapping[str, str],
) -> pd.DataFrame:
    """Read every source and stack their rows, in order, before cleaning."""
    if not specs:
        raise SourceError('no [source] given; add [source] path = "data/....csv" to the manifest')
    frames = [
        _load_one(spec, root=root, incident_id=incident_id, environ=environ) for spec in specs
    ]
    return frames[0] if len(frames) == 1 else _stack(frames)


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Columns that differ only in case are one column; a column a source lacks is ""."""
    spelling: dict[str, str] = {}
    for frame in frames:
        frame.columns = [spelling.setdefault(str(c).lower(), str(c)) for c in frame.columns]
    stacked = pd.concat(frames, ignore_index=True, sort=False)
    data = [c for c in stacked.columns if c not in (ROW_COLUMN, SOURCE_COLUMN)]
    stacked[data] = stacked[data].fillna("")
    return stacked[[*data, ROW_COLUMN, SOURCE_COLUMN]]


def _load_one(
    spec: SourceSpec, *, root: Path, incident_id: str, environ: Mapping[str, str]
) -> pd.DataFrame:
    if spec.url:
        query = _query(spec, root)
        if query is None:
            raise SourceError("[source] url needs query or query_file; add the SELECT to run")
        return read_database(spec.url, query, root=root, incident_id=incident_id, environ=environ)
    if not spec.path:
        raise SourceError('[source] needs path = "data/..." or url = "..."')
    path = _existing_file(root, spec.path)
    try:
        return _read_file(path, spec, root=root, incident_id=incident_id)
    except OSError as exc:
        raise SourceError(
            f"{spec.path}: cannot read it ({exc.strerror or exc}); check the file's permissions",
            path=spec.path,
        ) from exc


def _existing_file(root: Path, name: str) -> Path:
    path = root / name
    if path.is_dir():
        raise SourceError(
            f"{name} is a folder; set [source] path to the export file inside it", path=name
        )
    if not path.exists():
        raise SourceError(f"{name} not found; put the export there or fix [source] path", path=name)
    return path


def _read_file(path: Path, spec: SourceSpec, *, root: Path, incident_id: str) -> pd.DataFrame:
    name = str(spec.path)
    suffix = path.suffix.lower()
    if suffix in _TEXT:
        return read_delimited(path, name=name, encoding=spec.encoding, delimiter=spec.delimiter)
    if suffix in {".jsonl", ".ndjson"}:
        return _read_jsonl(path, name)
    if suffix in {".xlsx", ".xlsm"}:
        return _read_xlsx(path, name, spec.sheet)
    if suffix in _SQLITE or suffix == ".sql":
        return _read_sql_file(path, spec, root=root, incident_id=incident_id)
    if suffix == ".xls":
        raise SourceError(f"{name} is an old .xls workbook; save it as .xlsx or CSV", path=name)
    raise SourceError(
        f"{name}: cannot read {suffix or 'a file without an extension'}; export as .csv, .tsv, "
        ".txt, .xlsx, .jsonl or a .sql dump",
        path=name,
    )


def _query(spec: SourceSpec, root: Path) -> str | None:
    if spec.query:
        return spec.query
    if not spec.query_file:
        return None
    path = root / spec.query_file
    if not path.is_file():
        raise SourceError(
            f"{spec.query_file} not found; write the query there or fix [source] query_file",
            path=spec.query_file,
        )
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{spec.query_file} is not UTF-8 text; save it as UTF-8", path=spec.query_file
        ) from exc


def _read_sql_file(path: Path, spec: SourceSpec, *, root: Path, incident_id: str) -> pd.DataFrame:
    """A dump is loaded into memory first; a SQLite file is opened read-only in place."""
    name = str(spec.path)
    query = _query(spec, root)
    if query is not None:
        check_read_only(query, where="[source] query")
    dump = path.suffix.lower() == ".sql"
    connection = load_dump(path, name=name) if dump else open_sqlite(path)
    try:
        if query is None:
            tables = ", ".join(dump_tables(connection)) or "none"
            raise SourceError(
                f'{name} is a database; add query = "SELECT ... FROM <table>" to [source] '
                f"(tables: {tables})",
                path=name,
            )
        return query_sqlite(connection, query, incident_id=incident_id, source=name)
    except sqlite3.DatabaseError as exc:
        raise SourceError(
            f"{name} is not a SQLite database ({exc}); check [source] path", path=name
        ) from exc
    finally:
        connection.close()


def _read_jsonl(path: Path, name: str) -> pd.DataFrame:
    """One JSON object per line; nested values become JSON text, decimals keep their digits."""
    records: list[dict[str, str]] = []
    numbers: list[int] = []
    offset = 0
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            line = _jsonl_line(raw, name, number, offset)
            offset += len(raw)
            if line.strip():
                records.append(_json_object(line, name, number))
                numbers.append(number)
    if not records:
        raise SourceError(f"{name} has no rows; export the affected customers again", path=name)
    keys = list(dict.fromkeys(key for record in records for key in record))
    rows = [[record.get(key, "") for key in keys] for record in records]
    return text_frame(header_names(keys), rows, numbers, name)


def _jsonl_line(raw: bytes, name: str, number: int, offset: int) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise SourceError(
            f"{name}: byte 0x{raw[exc.start]:02X} at offset {offset + exc.start} "
            f"(line {number}) is not UTF-8, which JSON Lines must be; export the file again",
            path=name,
            row=number,
        ) from exc


def _json_object(line: str, name: str, number: int) -> dict[str, str]:
    try:
        value = json.loads(line, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise SourceError(
            f"{name} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); "
            "fix or remove the line",
            path=name,
            row=number,
        ) from exc
    if not isinstance(value, dict):
        raise SourceError(
            f"{name} line {number}: expected a JSON object {{...}}, found "
            f"{type(value).__name__}; write one object per line",
            path=name,
            row=number,
        )
    return {str(key): _json_text(item) for key, item in value.items()}


def _json_text(value: Any) -> str:
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=float)
    return cell_text(value)


def _read_xlsx(path: Path, name: str, sheet: str | None) -> pd.DataFrame:
    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except (zipfile.BadZipFile, InvalidFileException, KeyError) as exc:
        raise SourceError(
            f"{name} is not a readable .xlsx workbook; open it in Excel and save it again "
            "as .xlsx or CSV",
            path=name,
        ) from exc
    try:
        if sheet is not None and sheet not in book.sheetnames:
            available = ", ".join(f'"{s}"' for s in book.sheetnames)
            raise SourceError(
                f'{name} has no sheet "{sheet}"; its sheets are {available}; '
                'set sheet = "..." in [source]',
                path=name,
            )
        worksheet = book[sheet] if sheet is not None else book.worksheets[0]
        worksheet.reset_dimensions()  # some writers record a wrong size
        return _sheet_frame(worksheet, f"{name} sheet {worksheet.title!r}", name)
    finally:
        book.close()


def _sheet_frame(worksheet: Any, where: str, name: str) -> pd.DataFrame:
    """The first non-empty row names the columns; later non-empty rows are data."""
    header: list[str] | None = None
    rows: list[list[str]] = []
    numbers: list[int] = []
    for number, cells in enumerate(worksheet.iter_rows(min_row=1), start=1):
        values = [_xlsx_text(cell) for cell in cells]
        if not any(v.strip() for v in values):
            continue
        if header is None:
            header = values
        else:
            rows.append(values)
            numbers.append(number)
    if header is None:
        raise SourceError(f"{where} is empty; choose another sheet with sheet = ...", path=name)
    if not rows:
        raise SourceError(
            f"{where} has a header but no rows; export the affected customers again", path=name
        )
    width = max(_used(row) for row in [header, *rows])
    padded = [(row + [""] * width)[:width] for row in rows]
    return text_frame(header_names((header + [""] * width)[:width]), padded, numbers, name)


def _used(values: list[str]) -> int:
    """How many leading cells a row uses (up to its last non-empty one)."""
    return max((i + 1 for i, v in enumerate(values) if v), default=0)


def _xlsx_text(cell: Any) -> str:
    """The cell as Excel shows it, mostly: dates as ISO, 49.9 in a 0.00 format as 49.90."""
    value = cell.value
    if isinstance(value, dt.datetime) and value.time() == dt.time():
        return value.date().isoformat()
    if isinstance(value, int | float) and not isinstance(value, bool):
        number_format = getattr(cell, "number_format", None) or "General"
        decimals = _DECIMALS.search(number_format)
        if decimals and not any(mark in number_format for mark in "%E"):
            return f"{value:.{len(decimals[1])}f}"
    return cell_text(value)

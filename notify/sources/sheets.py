"""Exports that are records rather than delimited text: JSON Lines and Excel workbooks."""

from __future__ import annotations

import datetime as dt
import json
import re
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pandas as pd
from openpyxl.utils.exceptions import InvalidFileException

from notify.errors import SourceError
from notify.sources.cells import cell_text, header_names, text_frame

_DECIMALS = re.compile(r"0\.(0+)")  # "0.00", "#,##0.00": the digits Excel shows


def read_jsonl(path: Path, name: str) -> pd.DataFrame:
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


def read_xlsx(path: Path, name: str, sheet: str | None) -> pd.DataFrame:
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

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
from openpyxl.utils import get_column_letter
from openpyxl.utils.exceptions import InvalidFileException

from notify.errors import SourceError
from notify.sources.cells import cell_text, header_names, text_frame

_DECIMALS = re.compile(r"0\.(0+)")  # "0.00", "#,##0.00": the digits Excel shows
_ONE_SPELLING = "spell each key one way on every line of the export"


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
    keys = _jsonl_keys(records, numbers, name)
    rows = [[record.get(key, "") for key in keys] for record in records]
    return text_frame(header_names(keys, where=name, fix=_ONE_SPELLING), rows, numbers, name)


def _jsonl_keys(records: list[dict[str, str]], numbers: list[int], name: str) -> list[str]:
    """Every key in order of appearance; two spelt differently ("Email", "email") would be two
    columns, and a manifest naming one would miss the other's rows."""
    first_line: dict[str, int] = {}
    for record, number in zip(records, numbers, strict=True):
        for key in record:
            first_line.setdefault(key, number)
    by_fold: dict[str, str] = {}
    for key, number in first_line.items():
        other = by_fold.setdefault(" ".join(key.casefold().split()), key)
        if other != key:
            raise SourceError(
                f'{name}: key "{other}" (line {first_line[other]}) and key "{key}" (line {number}) '
                f"differ only in case or spaces; {_ONE_SPELLING}",
                path=name,
                row=number,
                column=key,
            )
    return list(first_line)


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
        value = json.loads(line, parse_float=Decimal, object_pairs_hook=_unique_keys)
    except _RepeatedKey as exc:
        raise SourceError(
            f'{name} line {number}: key "{exc.key}" appears twice in one object; '
            "keep one in the export",
            path=name,
            row=number,
            column=exc.key,
        ) from exc
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


class _RepeatedKey(ValueError):
    """json.loads keeps the last of two equal keys; an export holding both is ambiguous."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) < len(pairs):
        keys = [key for key, _ in pairs]
        raise _RepeatedKey(next(key for i, key in enumerate(keys) if key in keys[:i]))
    return value


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
    names = header_names(
        (header + [""] * width)[:width],
        where=where,
        fix="rename one in the workbook",
        place=get_column_letter,
    )
    return text_frame(names, padded, numbers, name)


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

"""Turn whatever a source yields into the text a template sees, the same way for every source."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from typing import Any

import pandas as pd

from notify.errors import SourceError
from notify.models import ROW_COLUMN, SOURCE_COLUMN


def cell_text(value: Any) -> str:
    """One value as text: NULL is "", 49.0 is "49", dates are ISO, nested data is JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _float_text(value)
    if isinstance(value, Decimal):
        return "" if value.is_nan() else format(value, "f")
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return _bytes_text(bytes(value))
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _float_text(value: float) -> str:
    if math.isnan(value):
        return ""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _bytes_text(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.hex()


def header_names(
    raw: Iterable[Any], *, where: str, fix: str, place: Callable[[int], str] = str
) -> list[str]:
    """Column names stripped of spaces; two that notify cannot tell apart stop the read, since
    a manifest naming one would silently ignore the other. `place` shows a 1-based position."""
    names: list[str] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(raw):
        name = cell_text(value).strip() or f"Unnamed: {index}"
        folded = _fold(name)
        if folded in seen:
            first = seen[folded]
            raise SourceError(
                f"{where}: columns {place(first + 1)} and {place(index + 1)} are "
                f"{_named(names[first], name)}; {fix}",
                path=where,
                column=name,
            )
        seen[folded] = index
        names.append(name)
    return names


def _fold(name: str) -> str:
    """A column name as cleaning matches the manifest's: case and runs of spaces do not count."""
    return " ".join(name.casefold().split())


def _named(first: str, second: str) -> str:
    if first == second:
        return f'both named "{first}"'
    return f'named "{first}" and "{second}", which notify cannot tell apart'


def text_frame(
    columns: Sequence[str], rows: Sequence[Sequence[str]], numbers: Sequence[int], source: str
) -> pd.DataFrame:
    """The DataFrame every source returns: text columns, then row number and source."""
    frame = pd.DataFrame(list(rows), columns=list(columns), dtype=object)
    return with_origin(frame, numbers, source)


def with_origin(frame: pd.DataFrame, numbers: Sequence[int], source: str) -> pd.DataFrame:
    """Attach each row's human row number and its source, so later errors can point at it."""
    frame[ROW_COLUMN] = pd.Series(numbers, index=frame.index, dtype="int64")
    frame[SOURCE_COLUMN] = source
    return frame

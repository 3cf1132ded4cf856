"""Read CSV, TSV and TXT exports as the operator was handed them: any usual encoding or delimiter.

notify.sources.encodings decodes the file (and notes lines that needed a guess); then Python's
csv module checks every record and gives the physical line it starts on; then pandas' C parser
builds the columns fast. pandas alone would pad a short row silently, and cannot say where a
record that spans lines begins.
"""

from __future__ import annotations

import csv
import io
from array import array
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from notify.errors import SourceError
from notify.models import NOTE_COLUMN, ROW_COLUMN
from notify.sources.cells import header_names, with_origin
from notify.sources.encodings import CONFIG_HINT, Decoded, decode, refuse_binary

_SAMPLE = 1 << 16
_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_WORDS = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
LEGACY_NOTE = (
    "line {line} is not UTF-8 like the rest of the file, so it was read as Windows-1252; "
    "check its names read right"
)


@dataclass(frozen=True)
class _Layout:
    """Where each data record starts, and which records are blank lines to leave out."""

    header: list[str]
    starts: array[int]  # physical line of every record after the header
    blank: list[int]  # indexes into starts


def read_delimited(
    path: Path, *, name: str, encoding: str | None, delimiter: str | None
) -> pd.DataFrame:
    """Every data row of a delimited text export, numbered by the line it starts on."""
    text = decode(path, name, encoding)
    sample = text.sample()
    if not sample.strip():
        raise SourceError(f"{name} is empty; export the affected customers again", path=name)
    refuse_binary(sample, name)
    sep = _delimiter(delimiter, name) if delimiter else sniff_delimiter(sample, path.suffix)
    layout = _layout(text, name, sep)
    frame = _parse(text, name, sep)
    if len(frame) != len(layout.starts):
        raise SourceError(
            f"{name}: pandas and the csv module disagree on the number of rows; "
            'look for stray " characters, or save the export again from its program',
            path=name,
        )
    frame.columns = header_names(layout.header, where=name, fix="rename one in the export")
    numbers = layout.starts
    if layout.blank:
        frame = frame.drop(index=layout.blank).reset_index(drop=True)
        skipped = set(layout.blank)
        numbers = array("q", (n for i, n in enumerate(layout.starts) if i not in skipped))
    if frame.empty:
        raise SourceError(
            f"{name} has a header but no rows; export the affected customers again", path=name
        )
    frame = with_origin(_drop_empty_unnamed(frame), numbers, name)
    return _with_notes(frame, text.legacy_lines, layout.starts)


def _with_notes(frame: pd.DataFrame, lines: tuple[int, ...], starts: array[int]) -> pd.DataFrame:
    """Note each record holding a line read as Windows-1252, for cleaning to list for review."""
    notes: dict[int, str] = {}
    for line in lines:
        record = bisect_right(starts, line) - 1
        if record >= 0:  # not in the header
            notes.setdefault(starts[record], LEGACY_NOTE.format(line=line))
    if notes:
        frame[NOTE_COLUMN] = frame[ROW_COLUMN].map(notes).fillna("")
    return frame


def _parse(text: Decoded, name: str, sep: str) -> pd.DataFrame:
    """Every value as str, "" for an empty one, blank lines kept so row positions match."""
    try:
        return pd.read_csv(
            text.raw(),
            sep=sep,
            encoding=text.encoding,
            header=0,
            dtype=str,
            keep_default_na=False,
            na_filter=False,
            skip_blank_lines=False,
            quotechar='"',
            engine="c",
        )
    except (pd.errors.ParserError, ValueError) as exc:
        raise SourceError(
            f"{name}: cannot be parsed ({' '.join(str(exc).split())}); save it again as CSV",
            path=name,
        ) from exc


def _drop_empty_unnamed(frame: pd.DataFrame) -> pd.DataFrame:
    """A trailing delimiter on every line makes a column with no name and no values."""
    empty = [c for c in frame.columns if c.startswith("Unnamed: ") and not frame[c].any()]
    return frame.drop(columns=empty) if empty else frame


def _delimiter(value: str, name: str) -> str:
    chosen = _DELIMITER_WORDS.get(value.lower(), value)
    if len(chosen) != 1 or chosen in '"\r\n':
        raise SourceError(
            f'{name}: delimiter "{value}" must be one character, or tab, comma, semicolon, '
            f"pipe {CONFIG_HINT}",
            path=name,
        )
    return chosen


def sniff_delimiter(sample: str, suffix: str = "") -> str:
    """The candidate that splits the header widest and the other sampled lines most evenly."""
    candidates = list(_DELIMITERS)
    if suffix.lower() == ".tsv":
        candidates.insert(0, candidates.pop(candidates.index("\t")))
    complete = sample if len(sample) < _SAMPLE else sample[: max(sample.rfind("\n"), 0)]
    best, best_score = candidates[0], (0.0, 1)
    for candidate in candidates:
        try:
            rows = [
                r for r in csv.reader(io.StringIO(complete, newline=""), delimiter=candidate) if r
            ]
        except csv.Error:
            continue
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        even = sum(len(r) == width for r in rows) / len(rows)
        if (even, width) > best_score:
            best, best_score = candidate, (even, width)
    return best


def _layout(text: Decoded, name: str, sep: str) -> _Layout:
    """Check every record's field count and note the physical line it starts on."""
    starts: array[int] = array("q")
    blank: list[int] = []
    line = 1
    with text.open() as handle:
        reader = csv.reader(handle, delimiter=sep, quotechar='"', strict=True)
        try:
            header = next(reader, [])
            if not any(header):
                raise SourceError(
                    f"{name} line 1 is empty; the column names must be on the first line",
                    path=name,
                    row=1,
                )
            width = len(header)
            line = reader.line_num + 1
            for record in reader:
                if len(record) != width or not any(record):
                    if any(field.strip() for field in record):
                        raise _field_count_error(name, line, width, len(record), sep)
                    blank.append(len(starts))
                starts.append(line)
                line = reader.line_num + 1
        except csv.Error as exc:
            raise _quote_error(name, line, str(exc)) from exc
    return _Layout(header=header, starts=starts, blank=blank)


def _quote_error(name: str, line: int, reason: str) -> SourceError:
    if "unexpected end of data" in reason:
        what = "a quoted field starts in this row and is never closed"
        fix = 'close the quote, or double a " inside a value (""), or export the file again'
    elif "field larger" in reason:
        what = f"a field in this row is longer than {csv.field_size_limit()} characters"
        fix = 'a quote is probably never closed; double a " inside a value ("")'
    else:
        what = "text follows a closing quote"
        fix = 'double every " inside a quoted value (""), or export the file again'
    return SourceError(f"{name} line {line}: {what}; {fix}", path=name, row=line)


def _field_count_error(name: str, line: int, width: int, found: int, sep: str) -> SourceError:
    other = ";" if sep != ";" else ","
    return SourceError(
        f"{name} line {line}: expected {width} fields, found {found} with delimiter "
        f'"{_shown(sep)}"; quote values that contain it, or set delimiter = "{other}" '
        f"(or the right one) {CONFIG_HINT}",
        path=name,
        row=line,
    )


def _shown(sep: str) -> str:
    return "\\t" if sep == "\t" else sep

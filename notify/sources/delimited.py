"""Read CSV, TSV and TXT exports as the operator was handed them: any usual encoding or delimiter.

Encoding: a byte-order mark decides, then valid UTF-8; a file full of NULs is BOM-less UTF-16
(charset-normalizer tells which); anything else is Windows-1252, which has every Latin-1 letter.

Python's csv module checks every record first and gives the physical line it starts on; then
pandas' C parser builds the columns fast. pandas alone would pad a short row silently, and
cannot say where a record that spans lines begins.
"""

from __future__ import annotations

import codecs
import csv
import io
from array import array
from dataclasses import dataclass
from pathlib import Path

import charset_normalizer
import pandas as pd

from notify.errors import SourceError
from notify.sources.cells import header_names, with_origin

_CHUNK = 1 << 20
_SAMPLE = 1 << 16
_UTF16 = ["utf_16_le", "utf_16_be"]
_BOMS = [
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16 LE: it starts with the same two bytes
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
]
_DELIMITERS = (",", ";", "\t", "|")
_DELIMITER_WORDS = {"comma": ",", "semicolon": ";", "tab": "\t", "\\t": "\t", "pipe": "|"}
_CONFIG_HINT = "in [source]"


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
    chosen = _encoding(path, name, encoding)
    sample = _sample(path, chosen)
    if not sample.strip():
        raise SourceError(f"{name} is empty; export the affected customers again", path=name)
    sep = _delimiter(delimiter, name) if delimiter else sniff_delimiter(sample, path.suffix)
    layout = _layout(path, name, chosen, sep)
    frame = _parse(path, name, chosen, sep)
    if len(frame) != len(layout.starts):
        raise SourceError(
            f"{name}: pandas and the csv module disagree on the number of rows; "
            'look for stray " characters, or save the export again from its program',
            path=name,
        )
    frame.columns = header_names(layout.header)
    numbers = layout.starts
    if layout.blank:
        frame = frame.drop(index=layout.blank).reset_index(drop=True)
        skipped = set(layout.blank)
        numbers = array("q", (n for i, n in enumerate(layout.starts) if i not in skipped))
    if frame.empty:
        raise SourceError(
            f"{name} has a header but no rows; export the affected customers again", path=name
        )
    return with_origin(_drop_empty_unnamed(frame), numbers, name)


def _parse(path: Path, name: str, encoding: str, sep: str) -> pd.DataFrame:
    """Every value as str, "" for an empty one, blank lines kept so row positions match."""
    try:
        return pd.read_csv(
            path,
            sep=sep,
            encoding=encoding,
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


def _encoding(path: Path, name: str, override: str | None) -> str:
    if override:
        try:
            chosen = codecs.lookup(override).name
        except LookupError as exc:
            raise SourceError(
                f'{name}: unknown encoding "{override}"; use e.g. encoding = "utf-8", '
                f'"cp1252" or "utf-16" {_CONFIG_HINT}',
                path=name,
            ) from exc
        _check_decodes(path, name, chosen)
        return chosen
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            _check_decodes(path, name, codec)
            return codec
    if head.startswith(b"PK\x03\x04"):
        raise SourceError(
            f"{name} is a zip file, probably an Excel workbook; rename it to .xlsx", path=name
        )
    failure = _first_bad_byte(path, "utf-8")
    if failure is None:
        return "utf-8"
    chosen = _utf16_without_bom(path, failure) or "cp1252"
    _check_decodes(path, name, chosen)  # names the first byte that is not text
    return chosen


def _utf16_without_bom(path: Path, failure: int) -> str | None:
    """Only UTF-16 text is full of NULs; charset-normalizer tells LE from BE, on samples only."""
    with path.open("rb") as handle:
        sample = handle.read(_SAMPLE)
        if failure > _SAMPLE:
            handle.seek(failure - failure % 2)
            sample += handle.read(_SAMPLE)
    if b"\x00" not in sample:
        return None
    best = charset_normalizer.from_bytes(sample, cp_isolation=_UTF16).best()
    return None if best is None else best.encoding


def _first_bad_byte(path: Path, encoding: str) -> int | None:
    """The offset of the first byte that does not decode (or is NUL), reading in chunks."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    offset = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return offset - pending + exc.start
            if "\x00" in text:
                return offset + _nul_position(chunk, text, encoding)
            offset += len(chunk)
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            return offset - len(decoder.getstate()[0])
    return None


def _nul_position(chunk: bytes, text: str, encoding: str) -> int:
    """NUL is never text in an export; for wide encodings the position is near enough."""
    if not encoding.replace("_", "-").startswith(("utf-16", "utf-32")):
        return chunk.find(b"\x00")
    unit = "utf-16-le" if "16" in encoding else "utf-32-le"
    return len(text[: text.index("\x00")].encode(unit))


def _check_decodes(path: Path, name: str, encoding: str) -> None:
    offset = _first_bad_byte(path, encoding)
    if offset is None:
        return
    data = path.read_bytes()
    line = data[:offset].decode(encoding, errors="replace").count("\n") + 1
    byte = data[offset] if offset < len(data) else 0
    shown = "UTF-8 or Windows-1252" if encoding in {"utf-8", "cp1252"} else encoding
    raise SourceError(
        f"{name}: byte 0x{byte:02X} at offset {offset} (line {line}) is not valid "
        f'{shown} text; save the export as CSV (UTF-8), or set encoding = "..." {_CONFIG_HINT}',
        path=name,
        row=line,
    )


def _sample(path: Path, encoding: str) -> str:
    with path.open(encoding=encoding, newline="") as handle:
        return handle.read(_SAMPLE)


def _delimiter(value: str, name: str) -> str:
    chosen = _DELIMITER_WORDS.get(value.lower(), value)
    if len(chosen) != 1 or chosen in '"\r\n':
        raise SourceError(
            f'{name}: delimiter "{value}" must be one character, or tab, comma, semicolon, '
            f"pipe {_CONFIG_HINT}",
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


def _layout(path: Path, name: str, encoding: str, sep: str) -> _Layout:
    """Check every record's field count and note the physical line it starts on."""
    starts: array[int] = array("q")
    blank: list[int] = []
    line = 1
    with path.open(encoding=encoding, newline="") as handle:
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
        f"(or the right one) {_CONFIG_HINT}",
        path=name,
        row=line,
    )


def _shown(sep: str) -> str:
    return "\\t" if sep == "\t" else sep

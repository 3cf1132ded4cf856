"""Decode a text export as the operator was handed it, and say which lines needed a guess.

A byte-order mark decides, then valid UTF-8; a file full of NULs is BOM-less UTF-16
(charset-normalizer tells which); a file with no UTF-8 text in it at all is Windows-1252,
which has every Latin-1 letter. A file that is UTF-8 except for a few lines (one row pasted
from an old system) keeps UTF-8 for the rest: only those lines are read as Windows-1252, and
they are listed, so one odd row neither garbles every other name nor goes out unseen.

Only the chunks holding such a line take the slow path; a clean file is read in place.
"""

from __future__ import annotations

import codecs
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import charset_normalizer

from notify.errors import SourceError

CONFIG_HINT = "in [source]"
LEGACY = "cp1252"  # what a line that is not UTF-8 is read as
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
_EXPORT_AGAIN = "export the affected customers again as CSV and check [source] path"
_BINARY = [  # (first bytes, what the file is, what to do)
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an old Office file (.xls)", "save it as .xlsx or CSV"),
    (b"%PDF", "a PDF document", _EXPORT_AGAIN),
    (b"\x1f\x8b", "gzip-compressed", "unpack it and set [source] path to the file inside"),
    (b"SQLite format 3\x00", "a SQLite database", 'rename it to .db and add query = "SELECT ..."'),
    (b"\x89PNG", "a PNG image", _EXPORT_AGAIN),
    (b"\xff\xd8\xff", "a JPEG image", _EXPORT_AGAIN),
    (b"GIF8", "a GIF image", _EXPORT_AGAIN),
]
# C0 controls but tab and line breaks, DEL, C1 controls, private use, non-characters
_NOT_TEXT = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ue000-\uf8ff\ufdd0-\ufdef\ufffe\uffff]"
)
_ESCAPED = re.compile("[\udc80-\udcff]")  # bytes that were not UTF-8, kept by surrogateescape


@dataclass(frozen=True)
class Decoded:
    """An export's text: the file in one encoding, or a UTF-8 copy with some lines re-read."""

    path: Path
    encoding: str
    repaired: bytes | None = None  # the whole text as UTF-8, when some lines were re-read
    legacy_lines: tuple[int, ...] = ()  # physical lines (1-based) read as Windows-1252

    def open(self) -> IO[str]:
        """The text with line endings untouched, as the csv module wants it."""
        if self.repaired is None:
            return self.path.open(encoding=self.encoding, newline="")
        return io.TextIOWrapper(io.BytesIO(self.repaired), encoding="utf-8", newline="")

    def raw(self) -> Path | IO[bytes]:
        """What pandas reads, in `encoding`."""
        return self.path if self.repaired is None else io.BytesIO(self.repaired)

    def sample(self) -> str:
        with self.open() as handle:
            return handle.read(_SAMPLE)


def decode(path: Path, name: str, override: str | None) -> Decoded:
    """The export's encoding, or a UTF-8 copy when only some of its lines are not UTF-8."""
    if override:
        return Decoded(path, _overridden(path, name, override))
    with path.open("rb") as handle:
        head = handle.read(_SAMPLE)
    for bom, codec in _BOMS:
        if head.startswith(bom):
            if codec == "utf-8-sig" and first_bad_byte(path, codec) is not None:
                return _mixed(path, name, skip=len(bom))
            check_decodes(path, name, codec)
            return Decoded(path, codec)
    _refuse_known_binary(head, name)
    failure = first_bad_byte(path, "utf-8")
    if failure is None:
        return Decoded(path, "utf-8")
    wide = _utf16_without_bom(path, failure)
    if wide is None and _has_utf8_text(path):
        return _mixed(path, name, skip=0)
    chosen = wide or LEGACY
    check_decodes(path, name, chosen)  # names the first byte that is not text
    return Decoded(path, chosen)


def _refuse_known_binary(head: bytes, name: str) -> None:
    """A file that a program other than a text editor wrote, recognised by its first bytes."""
    if head.startswith(b"PK\x03\x04"):
        raise SourceError(
            f"{name} is a zip file, probably an Excel workbook; rename it to .xlsx", path=name
        )
    for magic, what, fix in _BINARY:
        if head.startswith(magic):
            raise SourceError(f"{name} is not a text export: it is {what}; {fix}", path=name)


def refuse_binary(sample: str, name: str) -> None:
    """Bytes that happen to decode are still no export: control characters give them away."""
    odd = _NOT_TEXT.findall(sample)
    if len(odd) >= 4 and len(odd) * 50 > len(sample):
        raise SourceError(
            f"{name} is not a text export: it holds control characters such as "
            f"U+{ord(odd[0]):04X}; {_EXPORT_AGAIN}",
            path=name,
        )


def _overridden(path: Path, name: str, override: str) -> str:
    try:
        chosen = codecs.lookup(override).name
    except LookupError as exc:
        raise SourceError(
            f'{name}: unknown encoding "{override}"; use e.g. encoding = "utf-8", '
            f'"cp1252" or "utf-16" {CONFIG_HINT}',
            path=name,
        ) from exc
    check_decodes(path, name, chosen)
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


def _has_utf8_text(path: Path) -> bool:
    """Whether any character beyond ASCII decodes as UTF-8: a Windows-1252 file has none."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="ignore")
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            if not decoder.decode(chunk).isascii():
                return True
    return False


def first_bad_byte(path: Path, encoding: str) -> int | None:
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


def check_decodes(path: Path, name: str, encoding: str) -> None:
    """Stop on the first byte that is not text in `encoding`, naming its offset and line."""
    offset = first_bad_byte(path, encoding)
    if offset is None:
        return
    data = path.read_bytes()
    line = data[:offset].decode(encoding, errors="replace").count("\n") + 1
    byte = data[offset] if offset < len(data) else 0
    raise _not_text(name, byte, offset, line, encoding)


def _not_text(name: str, byte: int, offset: int, line: int, encoding: str) -> SourceError:
    if byte == 0:
        return SourceError(
            f"{name}: byte 0x00 at offset {offset} (line {line}) is never in a text export, "
            f"so the file is binary or damaged; {_EXPORT_AGAIN}",
            path=name,
            row=line,
        )
    shown = "UTF-8 or Windows-1252" if encoding in {"utf-8", "utf-8-sig", LEGACY} else encoding
    return SourceError(
        f"{name}: byte 0x{byte:02X} at offset {offset} (line {line}) is not valid "
        f'{shown} text; save the export as CSV (UTF-8), or set encoding = "..." {CONFIG_HINT}',
        path=name,
        row=line,
    )


def _mixed(path: Path, name: str, *, skip: int) -> Decoded:
    """A UTF-8 copy of a UTF-8 file in which the lines that are not UTF-8 are re-read."""
    repair = _Repair(name, offset=skip)
    with path.open("rb") as handle:
        handle.seek(skip)
        carry = b""
        while chunk := handle.read(_CHUNK):
            data = carry + chunk
            cut = _last_line_end(data)
            repair.add(data[:cut])
            carry = data[cut:]
        repair.add(carry)
    return Decoded(path, "utf-8", b"".join(repair.pieces), tuple(repair.legacy_lines))


def _last_line_end(data: bytes) -> int:
    """Where the last whole line ends; a lone CR at the very end may be half of a CRLF."""
    end = data.rfind(b"\n") + 1
    if end == 0:
        end = data.rfind(b"\r", 0, len(data) - 1) + 1
    return end


def _line_breaks(text: str) -> int:
    """Physical lines as the csv module counts them: CR, LF and CRLF each end one."""
    return text.count("\n") + text.count("\r") - text.count("\r\n")


def _line_end(text: str, start: int) -> int:
    ends = [i for i in (text.find("\n", start), text.find("\r", start)) if i >= 0]
    return min(ends, default=len(text))


class _Repair:
    """Chunks of whole lines in, UTF-8 out; lines that are not UTF-8 re-read and counted."""

    def __init__(self, name: str, *, offset: int) -> None:
        self.name = name
        self.offset = offset  # of the next chunk in the file
        self.line = 1  # the physical line the next chunk starts on
        self.pieces: list[bytes] = []
        self.legacy_lines: list[int] = []

    def add(self, data: bytes) -> None:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            text = data.decode("utf-8", "surrogateescape")
            self._stop_at_nul(text)
            self.pieces.append(self._relined(text).encode("utf-8"))
        else:
            self._stop_at_nul(text)
            self.pieces.append(data)
        self.offset += len(data)
        self.line += _line_breaks(text)

    def _relined(self, text: str) -> str:
        """The chunk with every line that holds an escaped byte decoded as Windows-1252."""
        out: list[str] = []
        done, line = 0, self.line
        for hit in _ESCAPED.finditer(text):
            if hit.start() < done:
                continue  # the rest of a line already re-read
            start = max(text.rfind("\n", 0, hit.start()), text.rfind("\r", 0, hit.start())) + 1
            end = _line_end(text, start)
            line += _line_breaks(text[done:start])
            out += [text[done:start], self._legacy(text[start:end], start, text, line)]
            self.legacy_lines.append(line)
            done = end
        out.append(text[done:])
        return "".join(out)

    def _legacy(self, segment: str, start: int, text: str, line: int) -> str:
        raw = segment.encode("utf-8", "surrogateescape")
        try:
            return raw.decode(LEGACY)
        except UnicodeDecodeError as exc:
            before = len(text[:start].encode("utf-8", "surrogateescape"))
            raise _not_text(
                self.name, raw[exc.start], self.offset + before + exc.start, line, LEGACY
            ) from exc

    def _stop_at_nul(self, text: str) -> None:
        position = text.find("\x00")
        if position >= 0:
            before = text[:position]
            offset = self.offset + len(before.encode("utf-8", "surrogateescape"))
            raise _not_text(self.name, 0, offset, self.line + _line_breaks(before), "utf-8")

"""Files a message carries: the incident's own (on every message) and each customer's.

A path is relative to the workspace and must stay inside it, however it is written (`..`,
an absolute path, a symbolic link). Every recipient's files are checked with the other
render problems, before anything is sent. A file's MIME part (headers and base64 lines)
is made once and its bytes reused by every message that carries it: the incident's own
files when the incident is loaded, a customer's file when first needed, kept while room
allows.
"""

from __future__ import annotations

import base64
import mimetypes
import os
import re
import threading
import urllib.parse
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from notify.errors import AttachmentError, ManifestError
from notify.models import Recipient

FIELD = "attachment"  # [columns] attachment = "<column with a path per customer>"
SEPARATOR = ";"  # several files in one cell
CACHE_BYTES = 32 * 1024 * 1024  # encoded customer files kept for the next message
_QUOTABLE = re.compile(r"[ !#-\[\]-~]{1,60}")  # printable ASCII but '"' and '\': no escaping
_ATTRIBUTE_SAFE = "!#$&+^`|~"  # RFC 2231 attribute-char besides letters, digits, '-', '.', '_'
_LINE = 78  # the longest header line RFC 5322 recommends
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")  # nothing a reader should see


@dataclass(frozen=True)
class Part:
    """One attached file as the message carries it."""

    name: str  # the file name the reader sees
    data: bytes  # the whole MIME part: headers, a blank line, base64 lines


class Attachments:
    """The files of one incident's messages, checked and encoded."""

    def __init__(self, root: Path, shared: Sequence[Part], column: str | None) -> None:
        self.root = root
        self.shared = tuple(shared)
        self.column = column  # the export column of customers' files; None: not mapped
        self._cache = _PartCache(CACHE_BYTES)

    @classmethod
    def load(
        cls, root: Path, files: Sequence[str], column: str | None, *, where: str
    ) -> Attachments | None:
        """The incident's files read and encoded now; None when the incident has none."""
        if not files and column is None:
            return None
        shared = []
        for raw in files:
            try:
                path = resolve(root, raw)
            except AttachmentError as exc:
                raise ManifestError(
                    f"{where}: attachments: {exc}; add the file or fix attachments ="
                ) from exc
            shared.append(_read_part(path, raw, where=f"{where}: attachments"))
        return cls(root, shared, column)

    def check(self, recipient: Recipient) -> None:
        """Every file of this recipient exists, can be read and lies in the workspace."""
        for raw in self.paths(recipient):
            self._resolve(recipient, raw)

    def parts(self, recipient: Recipient) -> tuple[Part, ...]:
        """The incident's parts, then the recipient's own, each encoded once."""
        own = self.paths(recipient)
        if not own:
            return self.shared
        parts = list(self.shared)
        for raw in own:
            path = self._resolve(recipient, raw)
            part = self._cache.get(path)
            if part is None:
                part = _read_part(path, raw, where=f"{recipient.where()}, {self._column()}")
                self._cache.put(path, part)
            parts.append(part)
        return tuple(parts)

    def paths(self, recipient: Recipient) -> list[str]:
        """The recipient's files as the export names them: every merged row's, in order."""
        if self.column is None:
            return []
        cells = [recipient.fields.get(FIELD), *(item.get(FIELD) for item in recipient.items)]
        paths: dict[str, None] = {}
        for cell in cells:
            for raw in str(cell or "").split(SEPARATOR):
                if raw.strip():
                    paths[raw.strip()] = None
        return list(paths)

    def _resolve(self, recipient: Recipient, raw: str) -> Path:
        try:
            return resolve(self.root, raw)
        except AttachmentError as exc:
            raise AttachmentError(
                f"{recipient.where()}, {self._column()}: {exc}; "
                "fix the path in the export or add the file"
            ) from exc

    def _column(self) -> str:
        return f'column "{self.column}"'


def with_item(columns: Mapping[str, str], items: Mapping[str, str]) -> dict[str, str]:
    """The [group] items, plus the attachment column when mapped: a customer's files are
    those of every row merged into them, not only the first row's."""
    if FIELD in columns and FIELD not in items:
        return {**items, FIELD: columns[FIELD]}
    return dict(items)


def resolve(root: Path, raw: str) -> Path:
    """The file `raw` names under the workspace root, refusing one outside it."""
    path = (root / raw).resolve()
    if not path.is_relative_to(root):
        raise AttachmentError(f"file {raw!r} is outside the workspace {root}")
    if not path.exists():
        raise AttachmentError(f"file {raw!r} not found")
    if not path.is_file():
        raise AttachmentError(f"{raw!r} is not a file")
    if not os.access(path, os.R_OK):
        raise AttachmentError(f"file {raw!r} cannot be read (permission denied)")
    return path


def encode_part(name: str, content: bytes) -> bytes:
    """A file as a base64 MIME part; the type from its name, the name per RFC 2231."""
    content_type = mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"
    head = (
        f"Content-Type: {content_type};{_parameter('name', name)}\r\n"
        f"Content-Disposition: attachment;{_parameter('filename', name)}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    encoded = base64.b64encode(content)
    lines = [encoded[start : start + 76] for start in range(0, len(encoded), 76)]
    return head.encode("ascii") + b"\r\n".join([*lines, b""])  # each line ends CRLF


def mixed(entity: list[bytes], parts: Sequence[Part], boundary: str) -> list[bytes]:
    """multipart/mixed: the body entity's pieces first, then each file's, for one join (a
    shared file's bytes are copied once, into the message)."""
    delimiter = f"\r\n--{boundary}\r\n".encode()
    pieces = [
        f'Content-Type: multipart/mixed;\r\n boundary="{boundary}"\r\n\r\n'.encode(),
        delimiter[2:],
        *entity,
    ]
    for part in parts:
        pieces += (delimiter, part.data)
    pieces.append(f"\r\n--{boundary}--\r\n".encode())
    return pieces


def visible_name(name: str) -> str:
    """A file name as readers show it: no control characters, no surrounding spaces."""
    return _CONTROL.sub("_", name.strip()).strip() or "attachment"


def _read_part(path: Path, raw: str, *, where: str) -> Part:
    name = visible_name(Path(raw).name)
    try:
        content = path.read_bytes()
    except OSError as exc:
        raise AttachmentError(
            f"{where}: file {raw!r} cannot be read ({exc.strerror}); check the file"
        ) from exc
    return Part(name, encode_part(name, content))


def _parameter(key: str, value: str) -> str:
    """`key="value"` on its own folded line, or RFC 2231 encoded words, continued over as
    many lines as it takes to keep each under 78 characters."""
    if _QUOTABLE.fullmatch(value):
        return f'\r\n {key}="{value}"'
    encoded = urllib.parse.quote(value, safe=_ATTRIBUTE_SAFE)
    if len(encoded) <= _LINE - len(f" {key}*=utf-8''"):
        return f"\r\n {key}*=utf-8''{encoded}"
    lines: list[str] = []
    start = 0
    while start < len(encoded):
        head = f" {key}*{len(lines)}*=" + ("" if lines else "utf-8''")
        end = min(start + _LINE - len(head) - 1, len(encoded))  # 1: the ';' after it
        while "%" in encoded[end - 2 : end] and end < len(encoded):  # never split a %XX
            end -= 1
        lines.append(f"\r\n{head}{encoded[start:end]}")
        start = end
    return ";".join(lines)


class _PartCache:
    """Encoded files by path, the least recently used dropped past a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self._parts: OrderedDict[Path, Part] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # sending threads may build messages too

    def get(self, path: Path) -> Part | None:
        with self._lock:
            part = self._parts.get(path)
            if part is not None:
                self._parts.move_to_end(path)
            return part

    def put(self, path: Path, part: Part) -> None:
        with self._lock:
            if path in self._parts or len(part.data) > self.budget:
                return
            self._parts[path] = part
            self._size += len(part.data)
            while self._size > self.budget:
                _, dropped = self._parts.popitem(last=False)
                self._size -= len(dropped.data)

"""A transport that writes each message to a folder instead of sending it.

The folder gets one .eml per recipient (any mail client opens it), an index.html to
browse them, and a summary.csv; nothing touches the network or the ledger. The listings
are written as the previews are, so a million previews never sit in memory as entries.
"""

from __future__ import annotations

import html
import re
import shutil
from pathlib import Path
from typing import IO

from notify.compose import Outgoing, OutgoingWithFiles
from notify.errors import OutputError
from notify.models import Outcome, State
from notify.reports import SafeCsvWriter, csv_writer, open_csv

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_INDEX_ROWS = "index.html.part"  # the index's rows, until the count for its heading is known


class PreviewWriter:
    """Writes messages as files; the same send() as SMTP, so previews are what would go."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0
        self._summary: IO[str] | None = None
        self._summary_rows: SafeCsvWriter | None = None
        self._index_rows: IO[str] | None = None

    def open(self) -> None:
        if self._summary is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot write previews to {self.folder}: {_why(exc)}; choose another "
                "--preview-dir",
                path=str(self.folder),
            ) from exc
        for stale in self.folder.glob("*.eml"):  # a preview shows this run only
            stale.unlink()
        self._summary = open_csv(self.folder / "summary.csv")
        self._summary_rows = csv_writer(self._summary)
        self._summary_rows.writerow(
            ["file", "to", "subject", "source_row", "message_id", "attachments"]
        )
        self._index_rows = (self.folder / _INDEX_ROWS).open("w", encoding="utf-8")

    def send(self, message: Outgoing) -> Outcome:
        self.open()
        assert self._summary_rows is not None and self._index_rows is not None
        name = f"{self.written + 1:06d}-{safe_filename(message.to)}.eml"
        (self.folder / name).write_bytes(message.data)
        self.written += 1
        files = "; ".join(message.attachments) if isinstance(message, OutgoingWithFiles) else ""
        self._summary_rows.writerow(
            [name, message.to, message.subject, message.row, message.message_id, files]
        )
        self._index_rows.write(
            f"\n<tr><td>{message.row}</td><td>{html.escape(message.to)}</td>"
            f'<td><a href="{html.escape(name)}">{html.escape(message.subject)}</a></td>'
            f"<td>{html.escape(files)}</td></tr>"
        )
        return Outcome(message.key, State.PENDING, None, f"preview written to {name}")

    def close(self) -> None:
        if self._summary is None or self._index_rows is None:
            return
        self._summary.close()
        self._index_rows.close()
        rows = self.folder / _INDEX_ROWS
        with (self.folder / "index.html").open("w", encoding="utf-8") as out:
            out.write(
                '<!doctype html><html><head><meta charset="utf-8"><title>notify previews'
                "</title><style>body{font-family:sans-serif}td{padding:2px 8px}</style>"
                f"</head><body><h1>{self.written} preview(s)</h1><table>"
                "<tr><th>source row</th><th>to</th><th>subject</th><th>attachments</th></tr>"
            )
            with rows.open(encoding="utf-8") as written_rows:
                shutil.copyfileobj(written_rows, out)
            out.write("</table></body></html>\n")
        rows.unlink()
        self._summary = self._index_rows = None

    def discard(self) -> None:
        """Remove what this run wrote, e.g. when a later message fails to render."""
        for handle in (self._summary, self._index_rows):
            if handle is not None:
                handle.close()
        self._summary = self._index_rows = None
        for written in self.folder.glob("*.eml"):  # open() left only this run's previews
            written.unlink()
        for name in ("summary.csv", "index.html", _INDEX_ROWS):
            (self.folder / name).unlink(missing_ok=True)
        self.written = 0


def _why(exc: OSError) -> str:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "it, or a folder above it, is a file"
    return exc.strerror or str(exc)


def safe_filename(address: str) -> str:
    """An address as a file name that every file system accepts."""
    return _UNSAFE_FILENAME.sub("_", address)[:80] or "recipient"

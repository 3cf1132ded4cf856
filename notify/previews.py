"""A transport that writes each message to a folder instead of sending it.

The folder gets one .eml per recipient (any mail client opens it), an index.html to
browse them, and a summary.csv; nothing touches the network or the ledger.
"""

from __future__ import annotations

import csv
import html
import re
from dataclasses import dataclass
from pathlib import Path

from notify.compose import Outgoing
from notify.models import Outcome, State

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)  # one per recipient: a million at most
class PreviewEntry:
    """One written preview, as listed in index.html and summary.csv."""

    file: str
    to: str
    subject: str
    row: int
    message_id: str


class PreviewWriter:
    """Writes messages as files; the same send() as SMTP, so previews are what would go."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.entries: list[PreviewEntry] = []

    def open(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for stale in self.folder.glob("*.eml"):  # a preview shows this run only
            stale.unlink()

    def send(self, message: Outgoing) -> Outcome:
        name = f"{len(self.entries) + 1:06d}-{safe_filename(message.to)}.eml"
        (self.folder / name).write_bytes(message.data)
        subject = message.subject
        self.entries.append(
            PreviewEntry(name, message.to, subject, message.row, message.message_id)
        )
        return Outcome(message.key, State.PENDING, None, f"preview written to {name}")

    def close(self) -> None:
        self._write_summary()
        self._write_index()

    def discard(self) -> None:
        """Remove what this run wrote, e.g. when a later message fails to render."""
        for entry in self.entries:
            (self.folder / entry.file).unlink(missing_ok=True)
        for name in ("summary.csv", "index.html"):
            (self.folder / name).unlink(missing_ok=True)
        self.entries.clear()

    def _write_summary(self) -> None:
        with (self.folder / "summary.csv").open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["file", "to", "subject", "source_row", "message_id"])
            writer.writerows((e.file, e.to, e.subject, e.row, e.message_id) for e in self.entries)

    def _write_index(self) -> None:
        with (self.folder / "index.html").open("w", encoding="utf-8") as out:
            out.write(
                '<!doctype html><html><head><meta charset="utf-8"><title>notify previews'
                "</title><style>body{font-family:sans-serif}td{padding:2px 8px}</style>"
                f"</head><body><h1>{len(self.entries)} preview(s)</h1><table>"
                "<tr><th>source row</th><th>to</th><th>subject</th></tr>"
            )
            out.writelines(  # row by row: the page of a million previews is never one string
                f"\n<tr><td>{e.row}</td><td>{html.escape(e.to)}</td>"
                f'<td><a href="{html.escape(e.file)}">{html.escape(e.subject)}</a></td></tr>'
                for e in self.entries
            )
            out.write("</table></body></html>\n")


def safe_filename(address: str) -> str:
    """An address as a file name that every file system accepts."""
    return _UNSAFE_FILENAME.sub("_", address)[:80] or "recipient"

"""A transport that writes each message to a folder instead of sending it.

The folder gets one .eml per recipient (any mail client opens it), a page per message
under messages/ that shows it as the customer will see it, an index.html to review them
all, and a summary.csv; nothing touches the network or the ledger. The listings are
written as the previews are, so a million previews never sit in memory as entries.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import IO

from notify import pages
from notify.compose import Outgoing, OutgoingWithFiles
from notify.errors import OutputError
from notify.models import Outcome, State
from notify.pages.review import Customer, ReviewSummary, message_view
from notify.reports import SafeCsvWriter, csv_writer, open_csv

_UNSAFE_FILENAME = re.compile(r"[^A-Za-z0-9._-]+")
_INDEX_ROWS = "index.html.part"  # the index's rows, until the count for its heading is known
MESSAGES = "messages"  # the folder of one page per message
_UNKNOWN = Customer("", 0, ())


class PreviewWriter:
    """Writes messages as files; the same send() as SMTP, so previews are what would go."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.written = 0
        self.summary = ReviewSummary("", "", 0, [], [])
        self._summary: IO[str] | None = None
        self._summary_rows: SafeCsvWriter | None = None
        self._index_rows: IO[str] | None = None

    def describe(self, summary: ReviewSummary) -> None:
        """What the review page opens with, and each row's name, items and flags."""
        self.summary = summary

    def open(self) -> None:
        if self._summary is not None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / MESSAGES).mkdir(exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot write previews to {self.folder}: {_why(exc)}; choose another "
                "--preview-dir",
                path=str(self.folder),
            ) from exc
        self._remove_pages()  # a preview shows this run only
        self._summary = open_csv(self.folder / "summary.csv")
        self._summary_rows = csv_writer(self._summary)
        self._summary_rows.writerow(
            ["file", "to", "subject", "source_row", "message_id", "attachments"]
        )
        self._index_rows = (self.folder / _INDEX_ROWS).open("w", encoding="utf-8")

    def send(self, message: Outgoing) -> Outcome:
        self.open()
        assert self._summary_rows is not None and self._index_rows is not None
        number = self.written + 1
        name = f"{number:06d}-{safe_filename(message.to)}.eml"
        page = f"{MESSAGES}/{number:06d}.html"
        (self.folder / name).write_bytes(message.data)
        self.written += 1
        files = "; ".join(message.attachments) if isinstance(message, OutgoingWithFiles) else ""
        self._summary_rows.writerow(
            [name, message.to, message.subject, message.row, message.message_id, files]
        )
        customer = self.summary.customers.get(message.key, _UNKNOWN)
        view = message_view(message.data)
        subject = message.subject or view.subject
        (self.folder / page).write_text(
            pages.render(
                "message.html.j2",
                n=number,
                eml=name,
                name=customer.name,
                address=message.to,
                subject=subject,
                html_part=view.html_part,
                text_part=view.text_part,
                headers=view.headers,
            ),
            encoding="utf-8",
        )
        row = pages.render(
            "review_row.html.j2",
            n=number,
            name=customer.name,
            address=message.to,
            items=customer.items or 1,
            flags=customer.flags,
            subject=subject,
            page=page,
            files=files,
        )
        self._index_rows.write(row.replace("\n", " ").strip() + "\n")
        return Outcome(message.key, State.PENDING, None, f"preview written to {name}")

    def close(self) -> None:
        if self._summary is None or self._index_rows is None:
            return
        self._summary.close()
        self._index_rows.close()
        rows = self.folder / _INDEX_ROWS
        index = self.folder / "index.html"
        with index.open("w", encoding="utf-8") as out, rows.open(encoding="utf-8") as written:
            pages.stream(
                "review.html.j2",
                out,
                summary=self._head(),
                written=self.written,
                rows=pages.fragments(written),
            )
        rows.unlink()
        self._summary = self._index_rows = None

    def discard(self) -> None:
        """Remove what this run wrote, e.g. when a later message fails to render."""
        for handle in (self._summary, self._index_rows):
            if handle is not None:
                handle.close()
        self._summary = self._index_rows = None
        self._remove_pages()  # open() left only this run's previews
        for name in ("summary.csv", "index.html", _INDEX_ROWS):
            (self.folder / name).unlink(missing_ok=True)
        shutil.rmtree(self.folder / MESSAGES, ignore_errors=True)
        self.written = 0

    def _head(self) -> ReviewSummary:
        """The summary given, or (for a writer used on its own) just the count written."""
        if self.summary.incident_id:
            return self.summary
        return ReviewSummary("", "", self.written, [], [])

    def _remove_pages(self) -> None:
        for stale in self.folder.glob("*.eml"):
            stale.unlink()
        for stale in (self.folder / MESSAGES).glob("*.html"):
            stale.unlink()


def _why(exc: OSError) -> str:
    if isinstance(exc, FileExistsError | NotADirectoryError):
        return "it, or a folder above it, is a file"
    return exc.strerror or str(exc)


def safe_filename(address: str) -> str:
    """An address as a file name that every file system accepts."""
    return _UNSAFE_FILENAME.sub("_", address)[:80] or "recipient"

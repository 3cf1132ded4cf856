"""Read mail from local files (an mbox file, a Maildir), leaving it as is.

Reading never marks, moves or deletes anything: Maildir files stay in new/, IMAP folders
are EXAMINEd and fetched with BODY.PEEK[] (mailboxes/imap.py). Only ``move`` changes a
mailbox, for the operator who asks to file processed bounces away. Messages are streamed,
never loaded all at once. Every failure becomes one BounceError line saying what, where
and what to do next.
"""

from __future__ import annotations

import mailbox
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from notify.errors import BounceError
from notify.mailboxes.mail import Mail, Mailbox, MailboxBase

_MAILDIR_PARTS = ("cur", "new", "tmp")
_DIGITS = re.compile(r"(\d+)")


# -- mbox ---------------------------------------------------------------------------------------


class MboxMailbox(MailboxBase):
    """An mbox file; ids are message numbers, stable while the file is unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._box = mailbox.mbox(path, create=False)

    def messages(self) -> Iterator[Mail]:
        """Each message without its "From " separator line, in file order."""
        try:
            for key in self._box.iterkeys():
                yield Mail(str(key), self._box.get_bytes(key))
        except OSError as exc:
            raise BounceError(f"{self.where}: cannot read the mbox ({_reason(exc)})") from exc

    def move(self, ids: Sequence[str], folder: str) -> None:
        """Append the messages, From line and all, to the sibling mbox `folder`; drop them here."""
        target_path = _sibling(self.path, folder)
        if target_path.is_dir():
            raise BounceError(f"{target_path} is a folder, not an mbox; choose another --move-to")
        wanted = set(ids)
        try:
            target = mailbox.mbox(target_path, create=True)
            self._box.lock()
            target.lock()
            try:
                keys = [key for key in self._box.iterkeys() if str(key) in wanted]
                for key in keys:
                    target.add(self._box.get_bytes(key, from_=True))
                target.flush()  # the copies are safe before any original goes
                for key in keys:
                    self._box.remove(key)
                self._box.flush()
            finally:
                target.unlock()
                target.close()
                self._box.unlock()
        except (OSError, mailbox.Error) as exc:
            raise BounceError(
                f"cannot move mail from {self.where} to {target_path} ({_reason(exc)}); "
                "check that both files are writable"
            ) from exc

    def close(self) -> None:
        self._box.close()


def open_mbox(path: Path) -> Mailbox:
    """Open an mbox file read-only in spirit: nothing is written unless `move` is called."""
    path = Path(path)
    if path.is_dir():
        hint = "it is a Maildir: use --maildir" if _is_maildir(path) else "give the mbox file"
        raise BounceError(f"{path} is a folder, not an mbox file; {hint}")
    try:
        with path.open("rb") as stream:
            start = stream.read(5)
    except FileNotFoundError as exc:
        raise BounceError(f"{path}: no such mbox file; check the path given to --mbox") from exc
    except OSError as exc:
        raise BounceError(f"{path}: cannot read the mbox ({_reason(exc)})") from exc
    if start and start != b"From ":
        raise BounceError(
            f'{path} is not an mbox file (it does not begin with a "From " line); '
            "give the mailbox file your mail system delivers bounces to"
        )
    try:
        return MboxMailbox(path)
    except OSError as exc:
        raise BounceError(f"{path}: cannot open the mbox ({_reason(exc)})") from exc


# -- Maildir ------------------------------------------------------------------------------------


class MaildirMailbox(MailboxBase):
    """A Maildir; ids are the messages' unique names (file names without their :2, flags)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)

    def messages(self) -> Iterator[Mail]:
        """Messages from new/ then cur/, in delivery order; nothing is renamed or moved."""
        for subdir, name in self._files():
            try:
                raw = (self.path / subdir / name).read_bytes()
            except FileNotFoundError:
                continue  # another client moved or deleted it meanwhile: it is not ours to read
            except OSError as exc:
                raise BounceError(
                    f"{self.where}: cannot read {subdir}/{name} ({_reason(exc)})"
                ) from exc
            yield Mail(_maildir_key(name), raw)

    def move(self, ids: Sequence[str], folder: str) -> None:
        """Rename the messages into the sibling Maildir `folder`, keeping their flags."""
        target = _sibling(self.path, folder)
        wanted = set(ids)
        try:
            for part in _MAILDIR_PARTS:
                (target / part).mkdir(mode=0o700, parents=True, exist_ok=True)
            for subdir, name in self._files():
                if _maildir_key(name) in wanted:
                    os.rename(self.path / subdir / name, target / subdir / name)
        except OSError as exc:
            raise BounceError(
                f"cannot move mail from {self.where} to {target} ({_reason(exc)}); "
                "check that both folders are writable"
            ) from exc

    def _files(self) -> Iterator[tuple[str, str]]:
        for subdir in ("new", "cur"):
            try:
                names = sorted(
                    (
                        entry.name
                        for entry in os.scandir(self.path / subdir)
                        if entry.is_file() and not entry.name.startswith(".")
                    ),
                    key=_delivery_order,
                )
            except OSError as exc:
                raise BounceError(f"{self.where}: cannot list {subdir}/ ({_reason(exc)})") from exc
            for name in names:
                yield subdir, name


def open_maildir(path: Path) -> Mailbox:
    """Open a Maildir after checking it is one, so a wrong path fails before any reading."""
    path = Path(path)
    if not path.exists():
        raise BounceError(f"{path}: no such Maildir; check the path given to --maildir")
    if not path.is_dir():
        raise BounceError(f"{path} is a file, not a Maildir; use --mbox for an mbox file")
    if not _is_maildir(path):
        missing = ", ".join(f"{part}/" for part in _MAILDIR_PARTS if not (path / part).is_dir())
        raise BounceError(
            f"{path} is not a Maildir (it has no {missing}); give the folder that holds "
            "cur/, new/ and tmp/"
        )
    return MaildirMailbox(path)


def _is_maildir(path: Path) -> bool:
    return all((path / part).is_dir() for part in _MAILDIR_PARTS)


def _delivery_order(name: str) -> list[str | int]:
    """Names start with the delivery time, its numbers unpadded: compare them as numbers."""
    return [int(part) if odd % 2 else part for odd, part in enumerate(_DIGITS.split(name))]


def _maildir_key(name: str) -> str:
    return name.split(":", 1)[0]


def _sibling(path: Path, folder: str) -> Path:
    """The mailbox named `folder` next to `path`; a name, never a path elsewhere."""
    if not folder or folder in (".", "..") or "/" in folder or os.sep in folder:
        raise BounceError(f"--move-to {folder!r} must be a plain folder name, not a path")
    return path.parent / folder


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

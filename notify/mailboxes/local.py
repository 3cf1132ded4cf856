"""Read mail from local files (an mbox file, a Maildir), leaving it as is.

Reading never marks, moves or deletes anything: Maildir files stay in new/, IMAP folders
are EXAMINEd and fetched with BODY.PEEK[] (mailboxes/imap.py). Only ``move`` changes a
mailbox, for the operator who asks to file processed bounces away: an mbox's folder is a
sibling mbox file, a Maildir's is a Dovecot Maildir++ folder (``<maildir>/.NAME/``), so
the mail client shows it. A message an mbox holds twice (the same Message-ID, or the same
bytes when it has none) is given once, and moved with its copies. Messages are streamed,
never loaded all at once. Every failure becomes one BounceError line saying what, where
and what to do next.
"""

from __future__ import annotations

import hashlib
import mailbox
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from notify.errors import BounceError
from notify.mailboxes.mail import Mail, Mailbox, MailboxBase, modified_utf7

_MAILDIR_PARTS = ("cur", "new", "tmp")
_DIGITS = re.compile(r"(\d+)")
_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*(<[^<>\s]{1,500}>)", re.IGNORECASE | re.MULTILINE)
_HEAD_END = re.compile(rb"\r?\n\r?\n")


# -- mbox ---------------------------------------------------------------------------------------


class MboxMailbox(MailboxBase):
    """An mbox file; ids are message numbers, stable while the file is unchanged."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._box = mailbox.mbox(path, create=False)

    def messages(self) -> Iterator[Mail]:
        """Each message without its "From " separator line, in file order, repeats once."""
        seen: set[bytes] = set()
        try:
            for key in self._box.iterkeys():
                raw = self._box.get_bytes(key)
                identity = _identity(raw)
                if identity not in seen:  # a repeat of one given already is left out
                    seen.add(identity)
                    yield Mail(str(key), raw)
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
                keys = self._with_repeats(wanted)
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

    def _with_repeats(self, wanted: set[str]) -> list[str]:
        """The keys of the wanted messages and of every copy of them this mbox holds."""
        identity = {key: _identity(self._box.get_bytes(key)) for key in self._box.iterkeys()}
        moving = {value for key, value in identity.items() if str(key) in wanted}
        return [key for key, value in identity.items() if str(key) in wanted or value in moving]

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
        """Rename the messages into the Maildir++ folder `folder`, keeping their flags."""
        target = _maildir_folder(self.path, folder)
        wanted = set(ids)
        try:
            for part in _MAILDIR_PARTS:
                (target / part).mkdir(mode=0o700, parents=True, exist_ok=True)
            (target / "maildirfolder").touch(mode=0o600)  # Maildir++: a folder, not a root
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
    _check_folder_name(folder)
    return path.parent / folder


def _maildir_folder(path: Path, folder: str) -> Path:
    """Dovecot's Maildir++ folder `folder`: `<root>/.NAME/`, the name in modified UTF-7.
    The root is the Maildir given, or its parent when it is itself a Maildir++ folder
    (`~/Maildir/.Bounces`), since Maildir++ keeps every folder at the root."""
    _check_folder_name(folder)
    if folder.startswith("."):
        raise BounceError(f"--move-to {folder!r} must not start with a dot; give the name only")
    root = path.parent if path.name.startswith(".") and _is_maildir(path.parent) else path
    return root / f".{modified_utf7(folder)}"


def _check_folder_name(folder: str) -> None:
    """A folder name, never a path elsewhere."""
    if not folder or folder in (".", "..") or "/" in folder or os.sep in folder:
        raise BounceError(f"--move-to {folder!r} must be a plain folder name, not a path")


def _identity(raw: bytes) -> bytes:
    """What makes two stored copies the same message: its Message-ID, else its bytes."""
    head = _HEAD_END.split(raw, 1)[0]
    match = _MESSAGE_ID.search(head)
    if match:
        return b"id:" + match[1]
    return b"sha256:" + hashlib.sha256(raw.replace(b"\r\n", b"\n")).digest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__

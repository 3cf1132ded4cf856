"""Where mail is read from: an mbox file, a Maildir or an IMAP folder, all behind `Mailbox`."""

from __future__ import annotations

from pathlib import Path

from notify.mailboxes.imap import open_imap
from notify.mailboxes.local import open_maildir, open_mbox
from notify.mailboxes.mail import Mail, Mailbox, Unmatched
from notify.settings import Settings

__all__ = ["Mail", "Mailbox", "Unmatched", "open_imap", "open_mailbox", "open_maildir", "open_mbox"]


def open_mailbox(
    imap_settings: Settings, *, mbox: Path | None, maildir: Path | None, imap: bool
) -> Mailbox:
    """The one mailbox a command was pointed at: an mbox, a Maildir, or the IMAP folder
    `imap_settings` name (the bounce mailbox, or the Reply-To one)."""
    if mbox is not None:
        return open_mbox(mbox)
    if maildir is not None:
        return open_maildir(maildir)
    assert imap, "the CLI asks for exactly one of --mbox, --maildir, --imap"
    return open_imap(imap_settings)

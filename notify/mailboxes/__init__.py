"""Where mail is read from: an mbox file, a Maildir or an IMAP folder, all behind `Mailbox`."""

from notify.mailboxes.imap import open_imap
from notify.mailboxes.local import open_maildir, open_mbox
from notify.mailboxes.mail import Mail, Mailbox

__all__ = ["Mail", "Mailbox", "open_imap", "open_maildir", "open_mbox"]

"""Reading bounce mail from mbox files, Maildirs and a real Dovecot, and every way it fails."""

from __future__ import annotations

import email
import email.policy
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from notify.errors import BounceError, SettingsError
from notify.mailboxes import open_imap, open_maildir, open_mbox
from notify.settings import Security, Settings, load_settings
from notify.workspace import Workspace
from tests.conftest import unavailable_service
from tests.imap_server import PASSWORD, Account, DovecotServer, find_dovecot


def bounce(n: int) -> bytes:
    """A small delivery-status bounce, different for each n, with LF line ends."""
    return (
        f"From: Mail Delivery System <MAILER-DAEMON@mx{n}.example.net>\n"
        f"To: bounces+token{n}@acme.example\n"
        f"Subject: Undelivered Mail Returned to Sender #{n}\n"
        f"Message-ID: <bounce-{n}@mx.example.net>\n"
        "MIME-Version: 1.0\n"
        'Content-Type: text/plain; charset="utf-8"\n'
        "Content-Transfer-Encoding: 8bit\n"
        "\n"
        f"<customer{n}@example.com>: host mx.example.com said: 550 5.1.1 User unknown\n"
        "Zoë's mailbox does not exist.\n"
    ).encode()


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    chunks = [b"From MAILER-DAEMON Mon Mar  4 10:00:00 2024\n" + raw + b"\n" for raw in messages]
    path.write_bytes(b"".join(chunks))
    return path


def make_maildir(path: Path, new: list[bytes], cur: list[bytes] = ()) -> Path:  # type: ignore[assignment]
    for part in ("cur", "new", "tmp"):
        (path / part).mkdir(parents=True, exist_ok=True)
    for n, raw in enumerate(new):
        (path / "new" / f"1709546400.M{n}P1.mx").write_bytes(raw)
    for n, raw in enumerate(cur):
        (path / "cur" / f"1709546500.M{n}P2.mx:2,S").write_bytes(raw)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, to prove nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def parsed(raw: bytes) -> tuple[list[tuple[str, str]], str]:
    """Headers and body, so IMAP's CRLF line ends compare equal to the LF originals."""
    message = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
    return list(message.items()), message.get_payload(decode=True).decode()  # type: ignore[union-attr]


def error(excinfo: pytest.ExceptionInfo[BounceError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# -- mbox -----------------------------------------------------------------------------------


def test_mbox_gives_every_message_exactly_and_changes_nothing(tmp_path: Path) -> None:
    originals = [bounce(n) for n in range(5)]
    path = write_mbox(tmp_path / "bounces.mbox", originals)
    before = path.read_bytes()

    with open_mbox(path) as box:
        first = list(box.messages())
        second = list(box.messages())

    assert [mail.raw for mail in first] == originals
    assert [mail.id for mail in first] == [mail.id for mail in second]
    assert len({mail.id for mail in first}) == 5
    assert box.where == str(path)
    assert path.read_bytes() == before


def test_mbox_ids_are_the_same_when_opened_again(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", [bounce(n) for n in range(3)])
    with open_mbox(path) as box:
        first = [(mail.id, mail.raw) for mail in box.messages()]
    with open_mbox(path) as box:
        assert [(mail.id, mail.raw) for mail in box.messages()] == first


def test_empty_mbox_file_has_no_messages(tmp_path: Path) -> None:
    path = tmp_path / "empty.mbox"
    path.write_bytes(b"")
    with open_mbox(path) as box:
        assert list(box.messages()) == []


def test_mbox_move_takes_only_the_given_messages_into_a_new_sibling(tmp_path: Path) -> None:
    originals = [bounce(n) for n in range(4)]
    path = write_mbox(tmp_path / "bounces.mbox", originals)
    with open_mbox(path) as box:
        mails = list(box.messages())
        box.move([mails[1].id, mails[3].id], "processed")

    with open_mbox(path) as box:
        assert [mail.raw for mail in box.messages()] == [originals[0], originals[2]]
    with open_mbox(tmp_path / "processed") as moved:
        assert [mail.raw for mail in moved.messages()] == [originals[1], originals[3]]
    assert (
        (tmp_path / "processed")
        .read_bytes()
        .startswith(b"From MAILER-DAEMON Mon Mar  4 10:00:00 2024\n")
    )


def _resent(raw: bytes) -> bytes:
    """The same message delivered again: another Received line, the same Message-ID."""
    return b"Received: from relay.example.net by mx.example.net; Mon, 4 Mar 2024\n" + raw


def test_mbox_gives_a_message_it_holds_twice_once(tmp_path: Path) -> None:
    originals = [bounce(0), bounce(1), _resent(bounce(0)), bounce(2), bounce(1)]
    path = write_mbox(tmp_path / "bounces.mbox", originals)
    with open_mbox(path) as box:
        mails = list(box.messages())
    assert [mail.raw for mail in mails] == [bounce(0), bounce(1), bounce(2)]
    assert [mail.id for mail in mails] == ["0", "1", "3"]


def test_mbox_repeats_without_a_message_id_are_found_by_their_bytes(tmp_path: Path) -> None:
    plain = bounce(0).replace(b"Message-ID: <bounce-0@mx.example.net>\n", b"")
    other = plain.replace(b"customer0@", b"customer7@")
    path = write_mbox(tmp_path / "bounces.mbox", [plain, other, plain])
    with open_mbox(path) as box:
        assert [mail.raw for mail in box.messages()] == [plain, other]


def test_mbox_move_takes_the_copies_of_a_message_with_it(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", [bounce(0), bounce(1), _resent(bounce(0))])
    with open_mbox(path) as box:
        box.move([next(box.messages()).id], "processed")
    with open_mbox(path) as box:
        assert [mail.raw for mail in box.messages()] == [bounce(1)]
    with open_mbox(tmp_path / "processed") as moved:
        assert [mail.raw for mail in moved.messages()] == [bounce(0)]
    assert (tmp_path / "processed").read_bytes().count(b"From MAILER-DAEMON") == 2


def test_mbox_move_appends_to_an_existing_folder(tmp_path: Path) -> None:
    write_mbox(tmp_path / "processed", [bounce(9)])
    path = write_mbox(tmp_path / "bounces.mbox", [bounce(0), bounce(1)])
    with open_mbox(path) as box:
        box.move([next(box.messages()).id], "processed")
    with open_mbox(tmp_path / "processed") as moved:
        assert [mail.raw for mail in moved.messages()] == [bounce(9), bounce(0)]


def test_missing_mbox(tmp_path: Path) -> None:
    with pytest.raises(BounceError) as excinfo:
        open_mbox(tmp_path / "nope.mbox")
    assert error(excinfo) == (
        f"{tmp_path / 'nope.mbox'}: no such mbox file; check the path given to --mbox"
    )


@pytest.mark.parametrize(
    "content",
    [b"Subject: not an mbox\n\nhello\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"],
    ids=["a single message", "binary garbage"],
)
def test_a_file_that_is_not_an_mbox(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bounces.mbox"
    path.write_bytes(content)
    with pytest.raises(BounceError) as excinfo:
        open_mbox(path)
    assert error(excinfo) == (
        f'{path} is not an mbox file (it does not begin with a "From " line); '
        "give the mailbox file your mail system delivers bounces to"
    )


def test_a_maildir_given_as_mbox(tmp_path: Path) -> None:
    path = make_maildir(tmp_path / "Maildir", [bounce(0)])
    with pytest.raises(BounceError) as excinfo:
        open_mbox(path)
    assert error(excinfo) == f"{path} is a folder, not an mbox file; it is a Maildir: use --maildir"


def test_move_to_must_be_a_folder_name(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", [bounce(0)])
    with open_mbox(path) as box, pytest.raises(BounceError) as excinfo:
        box.move(["0"], "../elsewhere")
    assert error(excinfo) == "--move-to '../elsewhere' must be a plain folder name, not a path"


# -- Maildir --------------------------------------------------------------------------------


def test_maildir_gives_new_and_seen_mail_exactly_and_leaves_new_alone(tmp_path: Path) -> None:
    new, cur = [bounce(n) for n in range(3)], [bounce(n) for n in range(3, 5)]
    path = make_maildir(tmp_path / "Maildir", new, cur)
    before = snapshot(path)

    with open_maildir(path) as box:
        first = list(box.messages())
        second = list(box.messages())

    assert [mail.raw for mail in first] == new + cur
    assert [mail.id for mail in first] == [mail.id for mail in second]
    assert first[3].id == "1709546500.M0P2.mx"  # the unique name, without the :2,S flags
    assert snapshot(path) == before


def test_maildir_reads_in_delivery_order_though_numbers_are_unpadded(tmp_path: Path) -> None:
    path = make_maildir(tmp_path / "Maildir", [])
    for usec, n in ((100, 1), (99, 0), (5, 2)):
        second = 1709546400 + (n == 2)
        (path / "new" / f"{second}.M{usec}P7.mx").write_bytes(bounce(n))
    with open_maildir(path) as box:
        assert [mail.raw for mail in box.messages()] == [bounce(0), bounce(1), bounce(2)]


def test_maildir_move_renames_only_the_given_messages_keeping_flags(tmp_path: Path) -> None:
    path = make_maildir(tmp_path / "Maildir", [bounce(0), bounce(1)], [bounce(2)])
    with open_maildir(path) as box:
        mails = list(box.messages())
        box.move([mails[1].id, mails[2].id], "Processed")

    target = path / ".Processed"  # Dovecot's Maildir++ layout, not a sibling Maildir
    assert sorted(p.name for p in target.iterdir()) == ["cur", "maildirfolder", "new", "tmp"]
    assert snapshot(target) == {
        "maildirfolder": b"",
        "new/1709546400.M1P1.mx": bounce(1),
        "cur/1709546500.M0P2.mx:2,S": bounce(2),
    }
    assert {k: v for k, v in snapshot(path).items() if not k.startswith(".")} == {
        "new/1709546400.M0P1.mx": bounce(0)
    }
    assert not (tmp_path / "Processed").exists()
    with open_maildir(target) as moved:
        assert [mail.id for mail in moved.messages()] == [mails[1].id, mails[2].id]


def test_maildir_move_into_an_existing_folder_keeps_what_it_holds(tmp_path: Path) -> None:
    path = make_maildir(tmp_path / "Maildir", [bounce(0)])
    make_maildir(path / ".Processed", [], [bounce(9)])  # another unique name, in cur/
    with open_maildir(path) as box:
        box.move([mail.id for mail in box.messages()], "Processed")
    with open_maildir(path / ".Processed") as moved:
        assert sorted(mail.raw for mail in moved.messages()) == sorted([bounce(9), bounce(0)])


def test_maildir_folder_names_are_stored_as_dovecot_does(tmp_path: Path) -> None:
    path = make_maildir(tmp_path / "Maildir", [bounce(0)])
    with open_maildir(path) as box:
        box.move([next(box.messages()).id], "Processed bounces ✓ & co")
    assert (path / ".Processed bounces &JxM- &- co" / "new").is_dir()


def test_a_maildir_folder_moves_into_a_folder_of_the_same_root(tmp_path: Path) -> None:
    root = make_maildir(tmp_path / "Maildir", [])
    bounces = make_maildir(root / ".Bounces", [bounce(0)])
    with open_maildir(bounces) as box:
        box.move([next(box.messages()).id], "Processed")
    assert (root / ".Processed" / "new" / "1709546400.M0P1.mx").read_bytes() == bounce(0)
    assert not (bounces / ".Processed").exists()


@pytest.mark.parametrize("folder", ["../elsewhere", ".Processed", "a/b", ".."])
def test_maildir_move_to_must_be_a_folder_name(tmp_path: Path, folder: str) -> None:
    path = make_maildir(tmp_path / "Maildir", [bounce(0)])
    with open_maildir(path) as box, pytest.raises(BounceError) as excinfo:
        box.move([next(box.messages()).id], folder)
    assert error(excinfo).startswith(f"--move-to {folder!r} must ")
    assert [p.name for p in path.iterdir() if p.name.startswith(".")] == []


def test_missing_maildir(tmp_path: Path) -> None:
    with pytest.raises(BounceError) as excinfo:
        open_maildir(tmp_path / "Maildir")
    assert error(excinfo) == (
        f"{tmp_path / 'Maildir'}: no such Maildir; check the path given to --maildir"
    )


def test_a_folder_without_cur_new_tmp_is_not_a_maildir(tmp_path: Path) -> None:
    path = tmp_path / "Maildir"
    (path / "tmp").mkdir(parents=True)
    with pytest.raises(BounceError) as excinfo:
        open_maildir(path)
    assert error(excinfo) == (
        f"{path} is not a Maildir (it has no cur/, new/); give the folder that holds "
        "cur/, new/ and tmp/"
    )


def test_an_mbox_given_as_maildir(tmp_path: Path) -> None:
    path = write_mbox(tmp_path / "bounces.mbox", [bounce(0)])
    with pytest.raises(BounceError) as excinfo:
        open_maildir(path)
    assert error(excinfo) == f"{path} is a file, not a Maildir; use --mbox for an mbox file"


# -- IMAP (a real Dovecot on loopback) --------------------------------------------------------


@pytest.mark.parametrize("security", ["tls", "starttls", "none"])
def test_imap_gives_every_message_and_marks_nothing_seen(
    imap_account: Account, security: str
) -> None:
    originals = [bounce(n) for n in range(7)]
    for raw in originals:
        imap_account.append(raw)

    with open_imap(imap_account.settings(security), chunk=3) as box:
        first = list(box.messages())
        second = list(box.messages())

    assert [parsed(mail.raw) for mail in first] == [parsed(raw) for raw in originals]
    assert [mail.raw for mail in first] == [raw.replace(b"\n", b"\r\n") for raw in originals]
    assert [mail.id for mail in first] == [mail.id for mail in second]
    assert len({mail.id for mail in first}) == 7
    flags = imap_account.flags()
    assert len(flags) == 7 and not any(r"\Seen" in f for f in flags.values())


def test_imap_ids_are_uidvalidity_and_uid_and_stable_across_connections(
    imap_account: Account,
) -> None:
    imap_account.append(bounce(0))
    imap_account.append(bounce(1))
    with open_imap(imap_account.settings()) as box:
        first = [mail.id for mail in box.messages()]
    with open_imap(imap_account.settings()) as box:
        assert [mail.id for mail in box.messages()] == first
    validity = first[0].split(":")[0]
    assert first == [f"{validity}:1", f"{validity}:2"]


def test_imap_where_names_the_folder_and_never_the_password(imap_account: Account) -> None:
    settings = imap_account.settings(imap_folder="INBOX")
    with open_imap(settings) as box:
        assert box.where == (f"imaps://{imap_account.user}@127.0.0.1:{settings.imap_port}/INBOX")
        assert PASSWORD not in repr(box) and PASSWORD not in repr(vars(box))


def test_imap_reads_a_folder_other_than_inbox(imap_account: Account) -> None:
    imap_account.append(bounce(0))
    imap_account.append(bounce(1), folder="Bounces")
    with open_imap(imap_account.settings(imap_folder="Bounces")) as box:
        assert [parsed(mail.raw) for mail in box.messages()] == [parsed(bounce(1))]


def test_imap_move_moves_only_the_given_messages_and_creates_the_folder(
    imap_account: Account,
) -> None:
    for n in range(5):
        imap_account.append(bounce(n))
    with open_imap(imap_account.settings(), chunk=2) as box:
        mails = list(box.messages())
        box.move([mails[0].id, mails[2].id, mails[4].id], "Processed bounces ✓")
        remaining = list(box.messages())

    assert [parsed(raw) for raw in imap_account.bodies()] == [parsed(bounce(1)), parsed(bounce(3))]
    assert [mail.id for mail in remaining] == [mails[1].id, mails[3].id]
    moved = imap_account.bodies("Processed bounces &JxM-")
    assert [parsed(raw) for raw in moved] == [parsed(bounce(n)) for n in (0, 2, 4)]
    assert not any(r"\Seen" in f for f in imap_account.flags().values())


@pytest.fixture(scope="module", params=["UIDPLUS", "no UIDPLUS"])
def dovecot_without_move(
    request: pytest.FixtureRequest, smtp_ca: tuple[trustme.CA, str]
) -> Iterator[DovecotServer]:
    """A second Dovecot that does not announce MOVE (and, once, not UIDPLUS either)."""
    binary = find_dovecot()
    if binary is None:
        unavailable_service("Dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    capabilities = "IMAP4rev1 LITERAL+" + (" UIDPLUS" if request.param == "UIDPLUS" else "")
    ca, ca_file = smtp_ca
    config = f"imap_capability = {capabilities}"
    with DovecotServer(str(binary), ca=ca, ca_file=ca_file, extra_config=config) as server:
        yield server


def test_imap_move_without_move_copies_and_expunges_only_those(
    dovecot_without_move: DovecotServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", dovecot_without_move.ca_file)
    account = dovecot_without_move.new_account()
    for n in range(4):
        account.append(bounce(n))
    account.flag(4, r"\Deleted")  # another client's choice: ours to keep
    with open_imap(account.settings()) as box:
        mails = list(box.messages())
        assert len(mails) == 3  # \Deleted mail is not read
        box.move([mails[0].id, mails[2].id], "Processed")
        remaining = [mail.id for mail in box.messages()]

    assert remaining == [mails[1].id]
    moved = account.bodies("Processed")
    assert [parsed(raw) for raw in moved] == [parsed(bounce(0)), parsed(bounce(2))]
    flags = account.flags()
    assert r"\Deleted" in flags[4]
    if "UIDPLUS" in dovecot_without_move.extra_config:
        assert sorted(flags) == [2, 4]
    else:  # no way to expunge only ours: they stay, flagged
        assert sorted(uid for uid, f in flags.items() if r"\Deleted" not in f) == [2]


def test_maildir_reads_what_dovecot_delivered(imap_account: Account) -> None:
    for n in range(3):
        imap_account.append(bounce(n))
    with open_maildir(imap_account.maildir) as box:
        mails = list(box.messages())
    assert [parsed(mail.raw) for mail in mails] == [parsed(bounce(n)) for n in range(3)]


def test_a_maildir_move_makes_a_folder_dovecot_serves(imap_account: Account) -> None:
    for n in range(3):
        imap_account.append(bounce(n))
    with open_maildir(imap_account.maildir) as box:
        mails = list(box.messages())
        box.move([mails[0].id, mails[2].id], "Processed")
    owner = imap_account.maildir.stat()
    for folder, _, files in os.walk(imap_account.maildir / ".Processed"):  # as the mail user
        for name in [folder, *(os.path.join(folder, f) for f in files)]:
            os.chown(name, owner.st_uid, owner.st_gid)
    assert [parsed(raw) for raw in imap_account.bodies("Processed")] == [
        parsed(bounce(0)),
        parsed(bounce(2)),
    ]
    assert [parsed(raw) for raw in imap_account.bodies()] == [parsed(bounce(1))]


def test_imap_move_into_an_existing_folder(imap_account: Account) -> None:
    imap_account.append(bounce(9), folder="Processed")
    imap_account.append(bounce(0))
    with open_imap(imap_account.settings()) as box:
        box.move([mail.id for mail in box.messages()], "Processed")
    assert imap_account.bodies() == []
    assert [parsed(raw) for raw in imap_account.bodies("Processed")] == [
        parsed(bounce(9)),
        parsed(bounce(0)),
    ]


def test_imap_move_to_a_folder_the_server_cannot_create(imap_account: Account) -> None:
    imap_account.append(bounce(0))
    with open_imap(imap_account.settings()) as box, pytest.raises(BounceError) as excinfo:
        box.move([mail.id for mail in box.messages()], "Bounces/Processed")
    message = error(excinfo)
    assert message.startswith(
        "cannot create IMAP folder 'Bounces/Processed' on "
        f"127.0.0.1:{imap_account.server.imaps_port} as '{imap_account.user}' "
        "([CANNOT] Invalid mailbox name"
    )
    assert message.endswith("create it in your mail client or choose another --move-to")
    assert [parsed(raw) for raw in imap_account.bodies()] == [parsed(bounce(0))]


def test_imap_move_refuses_ids_from_another_folder_generation(imap_account: Account) -> None:
    imap_account.append(bounce(0))
    with open_imap(imap_account.settings()) as box, pytest.raises(BounceError) as excinfo:
        box.move(["1:1"], "Processed")
    assert error(excinfo).startswith("mail id '1:1' is not from imaps://")
    assert len(imap_account.bodies()) == 1


def test_imap_login_refused(imap_account: Account) -> None:
    settings = imap_account.settings(imap_password="wrong-password")
    with pytest.raises(BounceError) as excinfo:
        open_imap(settings)
    assert error(excinfo) == (
        f"IMAP server 127.0.0.1:{settings.imap_port} refused the login for user "
        f"'{imap_account.user}' ([AUTHENTICATIONFAILED] Authentication failed.); "
        "check NOTIFY_IMAP_USER / NOTIFY_IMAP_PASSWORD"
    )
    assert "wrong-password" not in error(excinfo)


def test_imap_folder_that_does_not_exist(imap_account: Account) -> None:
    imap_account.append(bounce(0), folder="Bounces")
    settings = imap_account.settings(imap_folder="Bounced")
    with pytest.raises(BounceError) as excinfo:
        open_imap(settings)
    message = error(excinfo)
    assert message.startswith(
        f"IMAP folder 'Bounced' does not exist on 127.0.0.1:{settings.imap_port} "
        f"as '{imap_account.user}' (Mailbox doesn't exist: Bounced"
    )
    assert message.endswith("; set NOTIFY_IMAP_FOLDER to one of: Bounces, INBOX")


def test_imap_unreachable_port(imap_account: Account, unused_port: int) -> None:
    with pytest.raises(BounceError) as excinfo:
        open_imap(imap_account.settings(imap_port=unused_port))
    assert error(excinfo) == (
        f"cannot reach IMAP server 127.0.0.1:{unused_port} (Connection refused); "
        "check NOTIFY_IMAP_HOST, NOTIFY_IMAP_PORT and NOTIFY_IMAP_SECURITY"
    )


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_imap_untrusted_certificate(
    imap_account: Account, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, security: str
) -> None:
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    monkeypatch.setenv("SSL_CERT_FILE", str(other_ca))
    settings = imap_account.settings(security)
    with pytest.raises(BounceError) as excinfo:
        open_imap(settings)
    assert error(excinfo) == (
        f"TLS with IMAP server 127.0.0.1:{settings.imap_port} failed (certificate verify "
        "failed: unable to get local issuer certificate); check NOTIFY_IMAP_PORT and "
        "NOTIFY_IMAP_SECURITY (tls: 993, starttls: 143) and the server's certificate"
    )


def test_imap_tls_to_a_plain_port(imap_account: Account) -> None:
    settings = imap_account.settings("tls", imap_port=imap_account.server.imap_port)
    with pytest.raises(BounceError) as excinfo:
        open_imap(settings)
    assert error(excinfo).startswith(f"TLS with IMAP server 127.0.0.1:{settings.imap_port} failed")


def test_imap_password_is_never_sent_in_clear_off_loopback() -> None:
    settings = Settings(
        imap_host="imap.example.com",
        imap_security=Security.NONE,
        imap_port=143,
        imap_user="bounces",
        imap_password="s3cret",
    )
    with pytest.raises(SettingsError) as excinfo:
        open_imap(settings)
    assert str(excinfo.value) == (
        "refusing to send the IMAP password unencrypted to imap.example.com; "
        "set NOTIFY_IMAP_SECURITY=tls or starttls"
    )


def test_imap_needs_its_settings() -> None:
    with pytest.raises(SettingsError) as excinfo:
        open_imap(Settings(imap_host="127.0.0.1", imap_user="bounces"))
    assert str(excinfo.value) == (
        "NOTIFY_IMAP_PASSWORD is not set; put it in .env to read bounces over IMAP"
    )


@pytest.mark.parametrize(
    ("environ", "security", "port"),
    [
        ({}, "tls", 993),
        ({"NOTIFY_IMAP_SECURITY": "STARTTLS"}, "starttls", 143),
        ({"NOTIFY_IMAP_SECURITY": "none", "NOTIFY_IMAP_PORT": "1143"}, "none", 1143),
    ],
)
def test_imap_security_setting_picks_the_port(
    tmp_path: Path, environ: dict[str, str], security: str, port: int
) -> None:
    settings = load_settings(Workspace(tmp_path), environ)
    assert (settings.imap_security, settings.imap_port) == (security, port)


def test_imap_security_setting_is_checked(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as excinfo:
        load_settings(Workspace(tmp_path), {"NOTIFY_IMAP_SECURITY": "ssl"})
    assert str(excinfo.value) == (
        "NOTIFY_IMAP_SECURITY='ssl' is not one of tls, starttls, none; fix it in .env"
    )

"""DKIM: messages as they reach the relay verify with dkimpy against the key's public half
(the DNS answered by a stub), a tampered one fails, and a bad key stops the run first."""

from __future__ import annotations

import base64
import datetime as dt
import email
import email.policy
import time
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from notify.incident import load_incident
from notify.settings import Settings
from notify.signing import load_signer
from notify.workspace import Context
from tests.conftest import make_rows

SIGNED_HEADERS = "from:to:subject:date:message-id:mime-version:content-type:reply-to"


def write_key(path: Path, kind: str, *, password: bytes | None = None) -> bytes:
    """A fresh private key in PEM at `path`; returns the DNS TXT record of its public half."""
    if kind == "rsa":
        key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey = (
            rsa.generate_private_key(public_exponent=65537, key_size=2048)
        )
    elif kind == "ed25519":
        key = ed25519.Ed25519PrivateKey.generate()
    else:
        key = ec.generate_private_key(ec.SECP256R1())
    encryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    if isinstance(key, rsa.RSAPrivateKey):
        public = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    return b""


def dns(record: bytes, name: str = "s2026._domainkey.acme.example."):
    """A DNS stub for dkimpy: the TXT record at `name`, nothing anywhere else."""
    asked: list[bytes] = []

    def answer(qname: bytes, timeout: int = 5) -> bytes | None:
        asked.append(qname)
        return record if qname.decode() == name else None

    answer.asked = asked  # type: ignore[attr-defined]
    return answer


def signature_tags(data: bytes) -> dict[str, str]:
    message = email.message_from_bytes(data, policy=email.policy.compat32)
    value = "".join(str(message["DKIM-Signature"]).split())
    return dict(tag.split("=", 1) for tag in value.split(";") if tag)


@pytest.fixture(params=["rsa", "ed25519"])
def signed(request, workspace):
    """The default workspace signing with a fresh RSA-2048 or Ed25519 key."""
    record = write_key(workspace.root / "keys" / "dkim.pem", request.param)
    return workspace, record, request.param


def dkim_settings(**extra: str) -> dict[str, str]:
    return {"dkim_selector": "s2026", "dkim_key": "keys/dkim.pem", **extra}


def test_messages_as_the_relay_gets_them_verify_and_tampered_ones_do_not(
    signed, run_cli, smtp_server
):
    workspace, record, kind = signed
    workspace.smtp(smtp_server, **dkim_settings())
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 0, result.output
    assert len(smtp_server.messages) == 3
    for received in smtp_server.messages:
        resolver = dns(record)
        assert dkim.verify(received.data, dnsfunc=resolver)
        assert resolver.asked == [b"s2026._domainkey.acme.example."]
        tags = signature_tags(received.data)
        assert tags["a"] == f"{kind}-sha256" and tags["d"] == "acme.example"
        assert tags["s"] == "s2026" and tags["c"] == "relaxed/simple"
        assert tags["h"] == SIGNED_HEADERS
        tampered = received.data.replace(b"We charged you twice", b"We charged you once")
        assert tampered != received.data
        assert not dkim.verify(tampered, dnsfunc=dns(record))
        header_changed = received.data.replace(b"\r\nMessage-ID: <", b"\r\nMessage-ID: <x")
        assert header_changed != received.data
        assert not dkim.verify(header_changed, dnsfunc=dns(record))


def test_previews_are_signed_too(signed, run_cli):
    workspace, record, _ = signed
    workspace.env(**dkim_settings())
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 0, result.output
    for eml in (workspace.root / "previews" / "incident-42").glob("*.eml"):
        assert dkim.verify(eml.read_bytes(), dnsfunc=dns(record))


def test_a_test_send_adds_its_marker_without_breaking_the_signature(signed, run_cli, smtp_server):
    workspace, record, _ = signed
    workspace.smtp(smtp_server, **dkim_settings())
    result = run_cli(workspace, "send", "--incident", "42", "--to", "me@acme.example")
    assert result.exit_code == 0, result.output
    [received] = smtp_server.messages
    assert received.data.startswith(b"X-Notify-Test-Send: ")
    assert dkim.verify(received.data, dnsfunc=dns(record))


def test_check_proves_the_key_and_never_shows_it(signed, run_cli):
    workspace, _, kind = signed
    workspace.env(**dkim_settings())
    result = run_cli(workspace, "check", "--incident", "42", "--offline")
    assert result.exit_code == 0, result.output
    assert "Warning" not in result.output
    algorithm = "rsa-sha256" if kind == "rsa" else "ed25519-sha256"
    assert (
        f"DKIM: every message signed with the key at s2026._domainkey.acme.example ({algorithm})"
    ) in result.output.splitlines()
    pem = (workspace.root / "keys" / "dkim.pem").read_text()
    secret_lines = [line for line in pem.splitlines() if not line.startswith("-----")]
    previews = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    shown = result.output + previews.output
    shown += "".join(p.read_text() for p in (workspace.root / "previews").rglob("*.*"))
    assert not any(line in shown for line in secret_lines)


def test_a_signing_domain_that_does_not_align_with_from_is_a_warning(signed, run_cli):
    workspace, _, _ = signed
    workspace.env(**dkim_settings(dkim_domain="mail.other.example"))
    result = run_cli(workspace, "check", "--incident", "42", "--offline")
    assert result.exit_code == 0, result.output
    assert (
        "Warning: DKIM signs as mail.other.example but the mail is from acme.example: DMARC "
        "counts a signature only for the From domain or a parent of it; set "
        "NOTIFY_DKIM_DOMAIN=acme.example and publish the key there"
    ) in result.output.splitlines()


def test_a_parent_domain_aligns(tmp_path: Path):
    write_key(tmp_path / "k.pem", "ed25519")
    settings = Settings(dkim_selector="s1", dkim_key="k.pem", dkim_domain="acme.example")
    signer, warnings = load_signer(
        tmp_path, settings, from_domain="mail.acme.example", reply_to=False
    )
    assert signer is not None and signer.domain == "acme.example" and warnings == []


@pytest.mark.parametrize("kind", ["rsa", "ed25519"])
@pytest.mark.parametrize("body", [b"body\r\n", base64.encodebytes(bytes(range(256)) * 800)])
def test_the_signature_is_the_one_dkimpy_alone_makes(tmp_path: Path, monkeypatch, kind, body):
    """OpenSSL does the RSA operation and the body is not split into lines; the bytes
    must be dkimpy's own (both algorithms are deterministic)."""
    write_key(tmp_path / "k.pem", kind)
    signer, _ = load_signer(
        tmp_path,
        Settings(dkim_selector="s1", dkim_key="k.pem"),
        from_domain="acme.example",
        reply_to=False,
    )
    assert signer is not None
    message = (
        b"From: a@acme.example\r\nTo: b@example.com\r\nSubject: x\r\nDate: Mon, 02 Mar 2026 "
        b"10:00:00 +0000\r\nMessage-ID: <m@acme.example>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain\r\n\r\n" + body.replace(b"\n", b"\r\n").replace(b"\r\r", b"\r")
    )
    monkeypatch.setattr(time, "time", lambda: 1_790_000_000.0)
    ours = signer.sign(message)
    theirs = dkim.sign(
        message,
        b"s1",
        b"acme.example",
        signer.key.private,
        signature_algorithm=signer.key.algorithm,
        include_headers=[
            h.lower().encode()
            for h in ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type")
        ],
        canonicalize=(b"relaxed", b"simple"),
    )
    assert ours == theirs + message


@pytest.mark.parametrize(
    ("settings", "error"),
    [
        (
            {"dkim_selector": "s2026"},
            "NOTIFY_DKIM_SELECTOR is set but NOTIFY_DKIM_KEY is not; set both in .env to "
            "sign, or neither",
        ),
        (
            {"dkim_key": "keys/dkim.pem"},
            "NOTIFY_DKIM_KEY is set but NOTIFY_DKIM_SELECTOR is not; set both in .env to "
            "sign, or neither",
        ),
        (
            dkim_settings(dkim_key="keys/nope.pem"),
            "NOTIFY_DKIM_KEY=keys/nope.pem: cannot read the key file (No such file or "
            "directory); fix the path in .env",
        ),
        (
            dkim_settings(dkim_key="data/affected.csv"),
            "NOTIFY_DKIM_KEY=data/affected.csv: not a PEM private key; give an RSA or Ed25519 "
            "key (-----BEGIN PRIVATE KEY-----)",
        ),
        (
            dkim_settings(dkim_key="keys/locked.pem"),
            "NOTIFY_DKIM_KEY=keys/locked.pem: the key is encrypted; save it without a "
            "passphrase (openssl pkey -in KEY -out PLAIN.pem)",
        ),
        (
            dkim_settings(dkim_key="keys/ec.pem"),
            "NOTIFY_DKIM_KEY=keys/ec.pem: the key is neither RSA nor Ed25519, the two DKIM "
            "signs with",
        ),
        (
            dkim_settings(dkim_selector="s 1"),
            "NOTIFY_DKIM_SELECTOR='s 1' is not a DNS label like s2026; fix it in .env",
        ),
        (
            dkim_settings(dkim_domain="not_a_domain"),
            "NOTIFY_DKIM_DOMAIN 'not_a_domain' cannot sign: not a domain like acme.example; "
            "set NOTIFY_DKIM_DOMAIN in .env",
        ),
    ],
)
def test_a_key_or_setting_that_cannot_sign_stops_the_run_first(
    workspace, run_cli, smtp_server, settings, error
):
    write_key(workspace.root / "keys" / "dkim.pem", "ed25519")
    write_key(workspace.root / "keys" / "locked.pem", "rsa", password=b"secret")
    write_key(workspace.root / "keys" / "ec.pem", "ec")
    workspace.smtp(smtp_server, **settings)
    result = run_cli(workspace, "send", "--incident", "42", "--yes")
    assert result.exit_code == 3
    assert result.stderr.strip() == f"Error: {error}"
    assert smtp_server.messages == [] and smtp_server.connections == 0


def test_a_spooled_signed_message_keeps_the_date_it_was_signed_with(signed):
    workspace, record, _ = signed
    workspace.env(**dkim_settings())
    incident = load_incident(Context.open(workspace.root, {}), "42")
    recipient = incident.cleaned.recipients[0]
    [built] = incident.outgoing([recipient])
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=3)
    rebuilt = incident.composer.rebuilt(recipient, built.data, when=later)
    assert rebuilt is not None and rebuilt.data == built.data
    assert dkim.verify(rebuilt.data, dnsfunc=dns(record))


@pytest.mark.slow
def test_the_render_workers_sign_a_large_incident(workspace, run_cli):
    """4,500 recipients: previews are built, and signed, in forked render workers."""
    record = write_key(workspace.root / "keys" / "dkim.pem", "ed25519")
    workspace.env(**dkim_settings())
    workspace.rows(make_rows(4500))
    result = run_cli(workspace, "send", "--incident", "42", "--dry-run")
    assert result.exit_code == 0, result.output
    previews = sorted((workspace.root / "previews" / "incident-42").glob("*.eml"))
    assert len(previews) == 4500
    for eml in previews[::450]:
        assert dkim.verify(eml.read_bytes(), dnsfunc=dns(record))

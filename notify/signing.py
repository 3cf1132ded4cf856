"""DKIM: every message signed with the operator's key, previews included.

NOTIFY_DKIM_SELECTOR and NOTIFY_DKIM_KEY (a PEM private key, RSA or Ed25519) turn signing
on; NOTIFY_DKIM_DOMAIN is the signing domain (default: the From domain). dkimpy signs
(relaxed header and simple body canonicalization) From, To, Subject, Date, Message-ID,
MIME-Version, Content-Type, and Reply-To when the incident has one. Messages are signed
where they are built, in the render workers, never on a sending thread; a spooled
signed message keeps the Date it was signed with (Composer.rebuilt).

Loading the key signs a probe message and verifies it against the public key derived
from the private one, so a key that cannot sign stops the run before anything is sent.
The key's bytes appear in no message, error, repr or log; only its path is ever shown.
dkimpy and cryptography are imported only when signing is on.
"""

from __future__ import annotations

import base64
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notify.errors import SettingsError
from notify.settings import Settings

SIGNED = ("From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type")
CANONICALIZATION = (b"relaxed", b"simple")
MIN_RSA_BITS = 1024  # receivers ignore shorter keys (RFC 8301)
_DOMAIN = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_-]{1,63})*$")
_PROBE = (
    "From: probe@{domain}\r\nTo: probe@example.com\r\nSubject: notify DKIM probe\r\n"
    "Date: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <probe@{domain}>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nprobe\r\n"
)


@dataclass(frozen=True)
class Key:
    """A private key as dkimpy takes it, and the DNS record that publishes its public half."""

    algorithm: bytes  # b"rsa-sha256" or b"ed25519-sha256"
    private: bytes = field(repr=False)  # PEM for RSA, the base64 seed for Ed25519
    record: bytes  # the TXT record: v=DKIM1; k=...; p=...
    rsa: Any = field(default=None, repr=False)  # cryptography's RSA key: OpenSSL signs


class Signer:
    """Signs message bytes for one selector and domain."""

    def __init__(self, *, selector: str, domain: str, key: Key, reply_to: bool) -> None:
        self.selector = selector
        self.domain = domain
        self.key = key
        names = SIGNED + (("Reply-To",) if reply_to else ())
        self._headers = [name.encode() for name in names]

    def __repr__(self) -> str:
        return f"<Signer {self.description}>"

    @property
    def description(self) -> str:
        """Where the public key must be published, and the algorithm: for the operator."""
        return f"{self.dns_name} ({self.key.algorithm.decode()})"

    @property
    def dns_name(self) -> str:
        """Where receivers look the public key up."""
        return f"{self.selector}._domainkey.{self.domain}"

    def sign(self, message: bytes) -> bytes:
        """The message (every line ending CRLF, as Composer builds it) with its
        DKIM-Signature header on top."""
        signer = _dkim_class()(message, rsa=self.key.rsa)
        header = signer.sign(
            self.selector.encode(),
            self.domain.encode(),
            self.key.private,
            signature_algorithm=self.key.algorithm,
            include_headers=self._headers,
            canonicalize=CANONICALIZATION,
        )
        return bytes(header) + message

    def verify(self, message: bytes) -> bool:
        """Whether the message's signature holds against this key's public half."""
        import dkim

        return bool(dkim.verify(message, dnsfunc=self.dns_answer))

    def dns_answer(self, name: bytes, timeout: int = 5) -> bytes | None:
        """The TXT record for this signer's name, as the DNS would give it: nothing is
        looked up, since the public key is derived from the private one."""
        asked = name.decode("ascii", "replace").rstrip(".").lower()
        return self.key.record if asked == self.dns_name.lower() else None


def load_signer(
    root: Path, settings: Settings, *, from_domain: str, reply_to: bool
) -> tuple[Signer | None, list[str]]:
    """The signer the settings ask for, proven by signing and verifying a probe, and the
    warnings an operator should read; (None, []) when signing is off."""
    if not settings.dkim_selector and not settings.dkim_key:
        return None, []
    selector, path, domain = _names(settings, from_domain)
    signer = Signer(selector=selector, domain=domain, key=load_key(root, path), reply_to=reply_to)
    if not signer.verify(signer.sign(_PROBE.format(domain=domain).encode())):
        raise SettingsError(
            f"NOTIFY_DKIM_KEY={path}: a probe signed with it does not verify; "
            "check the key file (a whole RSA or Ed25519 private key)"
        )
    return signer, _alignment(domain, from_domain)


def _names(settings: Settings, from_domain: str) -> tuple[str, str, str]:
    """Selector, key path and signing domain, each checked."""
    selector, path = settings.dkim_selector, settings.dkim_key
    if not selector or not path:
        have, lack = ("KEY", "SELECTOR") if path else ("SELECTOR", "KEY")
        raise SettingsError(
            f"NOTIFY_DKIM_{have} is set but NOTIFY_DKIM_{lack} is not; "
            "set both in .env to sign, or neither"
        )
    if not _SELECTOR.match(selector):
        raise SettingsError(
            f"NOTIFY_DKIM_SELECTOR={selector!r} is not a DNS label like s2026; fix it in .env"
        )
    domain = (settings.dkim_domain or from_domain).lower().rstrip(".")
    if not _DOMAIN.match(domain):
        setting = "NOTIFY_DKIM_DOMAIN" if settings.dkim_domain else "the From domain"
        raise SettingsError(
            f"{setting} {domain!r} cannot sign: not a domain like acme.example; "
            "set NOTIFY_DKIM_DOMAIN in .env"
        )
    return selector, path, domain


def load_key(root: Path, raw: str) -> Key:
    """The PEM private key at `raw` (relative to the workspace, or absolute)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization

    where = f"NOTIFY_DKIM_KEY={raw}"
    try:
        data = (root / raw).expanduser().read_bytes()
    except OSError as exc:
        raise SettingsError(
            f"{where}: cannot read the key file ({exc.strerror}); fix the path in .env"
        ) from exc
    try:
        private = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:  # encrypted, and no password given
        raise SettingsError(
            f"{where}: the key is encrypted; save it without a passphrase "
            "(openssl pkey -in KEY -out PLAIN.pem)"
        ) from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SettingsError(
            f"{where}: not a PEM private key; give an RSA or Ed25519 key "
            "(-----BEGIN PRIVATE KEY-----)"
        ) from exc
    return _as_key(private, where)


def _as_key(private: Any, where: str) -> Key:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise SettingsError(
                f"{where}: an RSA key of {private.key_size} bits is too short for DKIM "
                "(receivers ignore keys under 1024 bits); make a 2048-bit one"
            )
        pem = private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        public = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Key(b"rsa-sha256", pem, _record(b"rsa", public), private)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = (serialization.Encoding.Raw, serialization.PrivateFormat.Raw)
        seed = private.private_bytes(*raw, serialization.NoEncryption())
        public = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return Key(b"ed25519-sha256", base64.b64encode(seed), _record(b"ed25519", public))
    raise SettingsError(f"{where}: the key is neither RSA nor Ed25519, the two DKIM signs with")


def _record(kind: bytes, public: bytes) -> bytes:
    return b"v=DKIM1; k=" + kind + b"; p=" + base64.b64encode(public)


def _alignment(domain: str, from_domain: str) -> list[str]:
    """A warning when DMARC would not count the signature for the From domain."""
    sender = from_domain.lower()
    if domain == sender or sender.endswith("." + domain) or domain.endswith("." + sender):
        return []
    return [
        f"DKIM signs as {domain} but the mail is from {sender}: DMARC counts a signature "
        f"only for the From domain or a parent of it; set NOTIFY_DKIM_DOMAIN={sender} and "
        "publish the key there"
    ]


@functools.cache
def _dkim_class() -> Callable[..., Any]:
    """dkimpy's signer, faster where a message is large or the key is RSA.

    dkimpy computes RSA in pure Python, 10-20 ms a signature. Its Ed25519 path signs the
    header hash with `key.sign(digest).signature`, so a key with that method taken down
    that path gives the bytes dkimpy's own RSA would (PKCS#1 v1.5 is deterministic) in
    about a millisecond. Made on first use, so that dkimpy loads only when signing."""
    import dkim
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, utils

    class Signed:
        def __init__(self, signature: bytes) -> None:
            self.signature = signature

    class DigestSigner:
        def __init__(self, key: Any) -> None:
            self.key = key

        def sign(self, digest: bytes) -> Signed:
            prehashed = utils.Prehashed(hashes.SHA256())
            return Signed(self.key.sign(digest, padding.PKCS1v15(), prehashed))

    class FastDkim(dkim.DKIM):  # type: ignore[misc]
        signature_algorithm: bytes  # set by dkim.DKIM
        body: bytes

        def __init__(self, message: bytes, *, rsa: Any) -> None:
            # dkimpy splits all it is given into lines, 4 ms for a 200 KB file: it gets the
            # header block, and the body as is (the same bytes, since every line ends CRLF).
            end = message.find(b"\r\n\r\n")
            super().__init__(message if end < 0 else message[: end + 4])
            if end >= 0:
                self.body = message[end + 4 :]
            self.rsa = rsa

        def gen_header(self, *args: Any, **kwargs: Any) -> Any:
            if self.rsa is None or self.signature_algorithm != b"rsa-sha256":
                return super().gen_header(*args, **kwargs)
            fields, include_headers, canon_policy, header_name, _, *more = args
            self.signature_algorithm = b"ed25519-sha256"
            try:
                return super().gen_header(
                    fields,
                    include_headers,
                    canon_policy,
                    header_name,
                    DigestSigner(self.rsa),
                    *more,
                    **kwargs,
                )
            finally:
                self.signature_algorithm = b"rsa-sha256"

    return FastDkim

"""TLS for ``wss://`` coordinators: a CA file, an ``ssl.SSLContext``, or a pinned CA.

A **CA hash** pins the coordinator's CA: the SHA-256 of the DER
SubjectPublicKeyInfo of the CA certificate, as hex (64 digits) — what
``legacygpu cluster start`` prints as ``CA sha256`` and what its join tokens
carry. A **client token** ``lgj1-<CA hash>-<secret>`` (the banner's
``client token:``) is both: :func:`split_token` parses it as the Rust SDK
does (crates/tls ``JoinToken``), the clients pin the hash and present only
the secret.

Pinning works in two steps, so that nothing secret is sent before the CA is
known: a first TLS handshake (no verification, nothing sent) reads the chain
the server presents and looks for a certificate whose public key has that
hash; a second, the real connection, then trusts exactly that certificate as
its only trust anchor, so OpenSSL checks that the server's certificate
verifies to it — and that it is issued for the host name or address of the
URL, as the Rust SDK's pinned verifier checks (docs/PROTOCOL.md). The CA
found is kept for later reconnections.

Every trust option secures ``wss://`` (``https://`` for
:class:`~legacygpu.Admin`) only: given with a ``ws://`` URL it is refused with
``ValueError`` before anything is sent, as the token would otherwise go out
in clear text.

Reading the presented chain needs Python 3.10 or newer.
"""

from __future__ import annotations

import _ssl
import asyncio
import hashlib
import re
import socket
import ssl
from typing import Any, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
#: What a client token starts with (crates/tls JoinToken::PREFIX).
TOKEN_PREFIX = "lgj1-"


class PinMismatch(ssl.SSLError):
    """No certificate in the server's chain has the pinned public key."""


def _tlv(der: bytes, pos: int) -> Tuple[int, int, int]:
    """The DER element at ``pos``: (tag, start of its content, end of it)."""
    if pos + 2 > len(der):
        raise ValueError("truncated DER")
    tag = der[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("multi-byte DER tags are not used in certificates")
    length = der[pos + 1]
    start = pos + 2
    if length & 0x80:
        n = length & 0x7F
        if n == 0 or n > 4 or start + n > len(der):
            raise ValueError("bad DER length")
        length = int.from_bytes(der[start : start + n], "big")
        start += n
    end = start + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, start, end


def spki_der(cert_der: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo of a DER X.509 certificate."""
    tag, cert_start, _ = _tlv(cert_der, 0)
    if tag != 0x30:
        raise ValueError("not a certificate (no outer SEQUENCE)")
    tag, pos, tbs_end = _tlv(cert_der, cert_start)
    if tag != 0x30:
        raise ValueError("not a certificate (no TBSCertificate)")
    # version [0] EXPLICIT is optional; then serial, signature algorithm,
    # issuer, validity, subject: six or five elements before the key.
    if cert_der[pos] == 0xA0:
        pos = _tlv(cert_der, pos)[2]
    for _ in range(5):
        pos = _tlv(cert_der, pos)[2]
    tag, _, end = _tlv(cert_der, pos)
    if tag != 0x30 or end > tbs_end:
        raise ValueError("not a certificate (no SubjectPublicKeyInfo)")
    return cert_der[pos:end]


def ca_hash_of(cert_der: bytes) -> str:
    """The pin of a certificate: SHA-256 of its DER SubjectPublicKeyInfo, lowercase hex."""
    return hashlib.sha256(spki_der(cert_der)).hexdigest()


def check_ca_hash(value: Any) -> str:
    """A pin as the Rust SDK reads one (``CaPin::parse``): 64 hex digits,
    either case, optionally prefixed ``sha256:``; returned in lowercase."""
    if not isinstance(value, str):
        raise TypeError(f"ca_hash must be a str, not {type(value).__name__}")
    text = value.strip()
    if text.startswith("sha256:"):
        text = text[len("sha256:"):]
    if not _HEX64.fullmatch(text):
        raise ValueError("ca_hash must be 64 hex digits (SHA-256 of the CA's SubjectPublicKeyInfo), "
                         "as `cluster start` prints it after `CA sha256`")
    return text.lower()


def split_token(token: str) -> Tuple[Optional[str], str]:
    """``(CA pin, secret)`` of a client token ``lgj1-<64 hex digits>-<secret>``
    (the secret: at least 16 printable ASCII characters, no spaces), or
    ``(None, token)`` for any other credential (the cluster token, an API
    key). A token that starts with ``lgj1-`` but is malformed raises
    ``ValueError``, as in the Rust SDK."""
    text = token.strip()
    if not text.startswith(TOKEN_PREFIX):
        return None, token
    rest = text[len(TOKEN_PREFIX):]
    pin, secret = rest[:64], rest[64:]
    printable = all(0x21 <= ord(c) <= 0x7E for c in secret[1:])
    if not _HEX64.fullmatch(pin) or not secret.startswith("-") or len(secret) - 1 < 16 or not printable:
        raise ValueError("not a join token: expected lgj1-<64 hex digits>-<secret>, as `cluster start` prints it")
    return pin.lower(), secret[1:]


def presented_chain(ssl_object: Any) -> List[bytes]:
    """The certificates the server presented, DER, leaf first."""
    getter = getattr(ssl_object, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        inner = getattr(ssl_object, "_sslobj", None)  # 3.10–3.12: present, undocumented
        getter = getattr(inner, "get_unverified_chain", None)
    if getter is None:
        raise RuntimeError("reading the server's certificate chain needs Python 3.10 or newer; use ca_file= instead of ca_hash=")
    chain = getter() or []
    # 3.13 gives DER bytes; before, _ssl.Certificate objects.
    der_format = getattr(_ssl, "ENCODING_DER", 2)
    return [c if isinstance(c, bytes) else c.public_bytes(der_format) for c in chain]


def can_read_chain() -> bool:
    """Whether this Python can read the chain a server presents."""
    inner = getattr(_ssl, "_SSLSocket", None)  # 3.10–3.12: present, undocumented
    return hasattr(ssl.SSLObject, "get_unverified_chain") or hasattr(inner, "get_unverified_chain")


class Tls:
    """How one client secures its ``wss://`` (or ``https://``) connections."""

    def __init__(
        self,
        context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        ca_hash: Optional[str] = None,
        *,
        urls: Sequence[str] = (),
        secure: str = "wss://",
    ) -> None:
        """``urls``: where the client connects, refused (``ValueError``) when
        a trust option is given and one of them is not ``secure``."""
        given = [x is not None for x in (context, ca_file, ca_hash)]
        if sum(given) > 1:
            raise ValueError("give at most one of ssl=, ca_file= and ca_hash= (a client token counts as ca_hash=)")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext")
        self.configured = any(given)
        self.ca_hash = None if ca_hash is None else check_ca_hash(ca_hash)
        self.check_urls(urls, secure)
        if ca_file is not None:
            context = ssl.create_default_context(cafile=ca_file)
        if self.ca_hash is not None and not can_read_chain():
            raise RuntimeError("ca_hash= needs Python 3.10 or newer (to read the server's chain); use ca_file= instead")
        self._context = context
        self._pinned: Optional[ssl.SSLContext] = None

    def check_urls(self, urls: Sequence[str], secure: str = "wss://") -> None:
        """Refuses a trust option with a URL it cannot secure (``ws://``),
        before anything is sent: the token would go out in clear text."""
        if not self.configured:
            return
        plain = [u for u in urls if not u.strip().startswith(secure)]
        if plain:
            what = "a CA pin (ca_hash=, or a client token lgj1-…)" if self.ca_hash else "ssl= / ca_file="
            raise ValueError(f"{what} needs TLS, but {plain[0]} is not {secure}: use {secure}HOST:PORT "
                             f"(the coordinator speaks TLS on the same port)")

    def _pinned_context(self, ca: bytes) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        # The pinned certificate is the only trust anchor, even when it is
        # not self-signed (webpki's rule in the Rust SDK).
        ctx.verify_flags |= getattr(ssl, "VERIFY_X509_PARTIAL_CHAIN", 0)
        ctx.load_verify_locations(cadata=ca)
        return ctx

    async def context_for(self, url: str, timeout: float) -> Optional[ssl.SSLContext]:
        """The SSL context to open ``url`` with (None for ``ws://``)."""
        if not url.startswith("wss://"):
            if self.configured:
                # A leader named by a standby, say: never in clear text.
                raise ValueError(f"refusing {url}: TLS is configured (ssl=, ca_file= or a CA pin)")
            return None
        if self.ca_hash is None:
            return self._context or ssl.create_default_context()
        if self._pinned is None:
            host, port = _host_port(url)
            ca = await asyncio.wait_for(self._find_ca(host, port), timeout)
            self._pinned = self._pinned_context(ca)
        return self._pinned

    def context_for_sync(self, url: str, timeout: float) -> Optional[ssl.SSLContext]:
        """The SSL context for an ``https://`` URL (blocking; for :class:`~legacygpu.Admin`)."""
        if self.ca_hash is None:
            return self._context
        if self._pinned is None:
            host, port = _host_port(url)
            probe = _probe_context()
            with socket.create_connection((host, port), timeout) as sock:
                with probe.wrap_socket(sock, server_hostname=host or None) as tls_sock:
                    chain = presented_chain(tls_sock)
            self._pinned = self._pinned_context(self._match(chain, host, port))
        return self._pinned

    async def _find_ca(self, host: str, port: int) -> bytes:
        _, writer = await asyncio.open_connection(host, port, ssl=_probe_context(), server_hostname=host or None)
        try:
            chain = presented_chain(writer.get_extra_info("ssl_object"))
        finally:
            writer.close()
        return self._match(chain, host, port)

    def _match(self, chain: List[bytes], host: str, port: int) -> bytes:
        for cert in chain:
            try:
                if ca_hash_of(cert) == self.ca_hash:
                    return cert
            except ValueError:
                continue
        raise PinMismatch(
            f"no certificate presented by {host}:{port} has the pinned CA hash {self.ca_hash} "
            f"({len(chain)} certificate(s) presented); refusing to connect"
        )


def _host_port(url: str) -> Tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "", parts.port or 443


def _probe_context() -> ssl.SSLContext:
    """The first handshake's: reads the chain, trusts nothing, sends nothing."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.check_hostname = False
    probe.verify_mode = ssl.CERT_NONE
    return probe

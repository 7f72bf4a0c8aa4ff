"""TLS for ``wss://`` coordinators: a CA file, an ``ssl.SSLContext``, or a pinned CA.

A **CA hash** pins the coordinator's CA: the SHA-256 of the DER
SubjectPublicKeyInfo of the CA certificate, as lowercase hex (64 characters)
— what ``legacygpu cluster start`` prints and what its join tokens carry.

Pinning works in two steps, so that nothing secret is sent before the CA is
known: a first TLS handshake (no verification, nothing sent) reads the chain
the server presents and looks for a certificate whose public key has that
hash; a second, the real connection, then trusts exactly that certificate as
its only CA, so OpenSSL checks that the server's certificate is signed by it.
The CA found is kept for later reconnections. The host name is not checked in
that mode: the pinned CA is the cluster's own and vouches only for it.

Reading the presented chain needs Python 3.10 or newer.
"""

from __future__ import annotations

import _ssl
import asyncio
import hashlib
import re
import ssl
from typing import Any, List, Optional, Tuple
from urllib.parse import urlsplit

_HEX64 = re.compile(r"[0-9a-f]{64}")


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
    if not isinstance(value, str):
        raise TypeError(f"ca_hash must be a str, not {type(value).__name__}")
    if not _HEX64.fullmatch(value):
        raise ValueError("ca_hash must be 64 lowercase hex digits (SHA-256 of the CA's SubjectPublicKeyInfo)")
    return value


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
    """How one client secures its ``wss://`` connections."""

    def __init__(
        self,
        context: Optional[ssl.SSLContext] = None,
        ca_file: Optional[str] = None,
        ca_hash: Optional[str] = None,
    ) -> None:
        given = [x is not None for x in (context, ca_file, ca_hash)]
        if sum(given) > 1:
            raise ValueError("give at most one of ssl=, ca_file= and ca_hash=")
        if context is not None and not isinstance(context, ssl.SSLContext):
            raise TypeError("ssl must be an ssl.SSLContext")
        if ca_file is not None:
            context = ssl.create_default_context(cafile=ca_file)
        self.ca_hash = None if ca_hash is None else check_ca_hash(ca_hash)
        if self.ca_hash is not None and not can_read_chain():
            raise RuntimeError("ca_hash= needs Python 3.10 or newer (to read the server's chain); use ca_file= instead")
        self._context = context
        self._pinned: Optional[ssl.SSLContext] = None

    async def context_for(self, url: str, timeout: float) -> Optional[ssl.SSLContext]:
        """The SSL context to open ``url`` with (None for ``ws://``)."""
        if not url.startswith("wss://"):
            return None
        if self.ca_hash is None:
            return self._context or ssl.create_default_context()
        if self._pinned is None:
            ca = await asyncio.wait_for(self._find_ca(url), timeout)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(cadata=ca)
            self._pinned = ctx
        return self._pinned

    async def _find_ca(self, url: str) -> bytes:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        probe.check_hostname = False
        probe.verify_mode = ssl.CERT_NONE
        _, writer = await asyncio.open_connection(host, port, ssl=probe, server_hostname=host or None)
        try:
            chain = presented_chain(writer.get_extra_info("ssl_object"))
        finally:
            writer.close()
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

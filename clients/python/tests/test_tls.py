"""TLS: a CA file, a pinned CA hash, and refusals before any secret is sent.

The coordinator's TLS is being written in parallel, so the server here is a
scripted one (scripted.py) with certificates made by the `openssl` command:
a CA, a server certificate it signs (for 127.0.0.1), and an impostor's."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cluster import skip_or_fail
from scripted import Scripted

import legacygpu
from legacygpu import tls



@pytest.fixture(scope="module", autouse=True)
def needs_openssl():
    if shutil.which("openssl") is None:
        skip_or_fail("the openssl command is not installed")


def openssl(*args: str, cwd: Path) -> bytes:
    return subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True).stdout


def make_ca(d: Path, name: str, key: str) -> None:
    new_key = ["-newkey", "rsa:2048"] if key == "rsa" else ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    openssl("req", "-x509", *new_key, "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
            "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=d)


def make_leaf(d: Path, name: str, ca: str) -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca", "ec")
    make_ca(d, "evil", "rsa")
    make_leaf(d, "server", "ca")
    make_leaf(d, "impostor", "evil")
    return d


def der(pem_path: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem_path.read_text())


def openssl_pin(d: Path, cert: str) -> str:
    """The pin computed by openssl, independently of tls.spki_der."""
    pub = openssl("x509", "-in", cert, "-pubkey", "-noout", cwd=d)
    spki = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub, check=True,
                          capture_output=True).stdout
    return hashlib.sha256(spki).hexdigest()


def server_context(d: Path, leaf: str, *chain: str) -> ssl.SSLContext:
    (d / f"{leaf}-chain.pem").write_text("".join((d / f"{c}.pem").read_text() for c in (leaf, *chain)))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / f"{leaf}-chain.pem", d / f"{leaf}.key")
    return ctx


def test_the_pin_is_sha256_of_the_ca_spki(pki):
    for cert in ("ca.pem", "evil.pem", "server.pem"):
        assert tls.ca_hash_of(der(pki / cert)) == openssl_pin(pki, cert)
    with pytest.raises(ValueError):
        tls.spki_der(b"\x30\x03\x02\x01\x01")


def connect(server_ctx, **client_args):
    """Connects a client with ``client_args``; returns (error or None, upgrades seen)."""

    async def go():
        async with Scripted(ssl_context=server_ctx) as server:
            try:
                async with legacygpu.AsyncClient(server.url, token="the-secret", connect_timeout_s=10, **client_args):
                    error = None
            except legacygpu.LegacyGpuError as e:
                error = e
            return error, server.upgrades

    return asyncio.run(asyncio.wait_for(go(), 30))


needs_chain = pytest.mark.skipif(not tls.can_read_chain(), reason="reading the presented chain needs Python 3.10+")


def test_ca_file(pki):
    error, upgrades = connect(server_context(pki, "server", "ca"), ca_file=str(pki / "ca.pem"))
    assert error is None and upgrades[0]["Authorization"] == "Bearer the-secret"


def test_system_cas_refuse_a_private_ca(pki):
    error, upgrades = connect(server_context(pki, "server", "ca"))
    assert isinstance(error, legacygpu.ConnectFailed) and upgrades == []


@needs_chain
def test_the_right_pin_connects(pki):
    error, upgrades = connect(server_context(pki, "server", "ca"), ca_hash=openssl_pin(pki, "ca.pem"))
    assert error is None and len(upgrades) == 1


@needs_chain
def test_a_wrong_pin_is_refused_before_any_secret_is_sent(pki):
    error, upgrades = connect(server_context(pki, "server", "ca"), ca_hash=openssl_pin(pki, "evil.pem"))
    assert isinstance(error, legacygpu.ConnectFailed) and "pinned CA hash" in str(error)
    assert upgrades == []  # no HTTP request, so no token, reached the server


@needs_chain
def test_presenting_the_pinned_ca_beside_an_impostor_certificate_is_refused(pki):
    # The real CA certificate is public: an impostor can present it, but
    # cannot have it sign its own certificate.
    error, upgrades = connect(server_context(pki, "impostor", "ca"), ca_hash=openssl_pin(pki, "ca.pem"))
    assert isinstance(error, legacygpu.ConnectFailed) and upgrades == []

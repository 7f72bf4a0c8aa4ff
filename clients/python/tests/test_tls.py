"""TLS: a CA file, a pinned CA hash, client tokens, and refusals before any
secret is sent.

Against the real coordinator, which speaks TLS on its own ports (wss:// and
https:// beside ws:// and http://) with a CA of its own in DATA_DIR/tls/:
started with `--not-local 127.0.0.1`, it treats this machine as another one,
so plaintext is refused and TLS is what a remote client would use. The pin and
the tokens come from its banner. Against a scripted server (scripted.py) with
certificates made by the `openssl` command — a CA, a server certificate it
signs (for 127.0.0.1), one for another name, and an impostor's — what the
real one cannot show: a wrong pin, an impostor, a wrong name."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
from cluster import FAST, Coordinator, skip_or_fail, until, worker
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


def make_leaf(d: Path, name: str, ca: str, san: str = "IP:127.0.0.1,DNS:localhost") -> None:
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text(f"subjectAltName={san}\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca", "ec")
    make_ca(d, "evil", "rsa")
    make_leaf(d, "server", "ca")
    make_leaf(d, "impostor", "evil")
    make_leaf(d, "elsewhere", "ca", san="DNS:elsewhere.example")
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


@needs_chain
def test_a_pinned_ca_still_checks_the_name(pki):
    # As the Rust SDK's pinned verifier: the chain verifies to the pinned
    # CA, and the certificate must be for the host of the URL.
    error, upgrades = connect(server_context(pki, "elsewhere", "ca"), ca_hash=openssl_pin(pki, "ca.pem"))
    assert isinstance(error, legacygpu.ConnectFailed) and upgrades == []
    error, upgrades = connect(server_context(pki, "elsewhere", "ca"), ca_file=str(pki / "ca.pem"))
    assert isinstance(error, legacygpu.ConnectFailed) and upgrades == []


def test_a_pin_over_plaintext_is_refused_before_connecting(pki):
    pin = openssl_pin(pki, "ca.pem")
    token = f"lgj1-{pin}-{'s' * 43}"

    async def go():
        async with Scripted() as server:  # plaintext: it would see the token
            for kwargs in ({"ca_hash": pin}, {"token": token}, {"ca_file": str(pki / "ca.pem")}):
                with pytest.raises(ValueError, match="wss://"):
                    legacygpu.AsyncClient(server.url, **kwargs)
            with pytest.raises(ValueError, match="wss://"):
                legacygpu.AsyncClient(f"wss://127.0.0.1:1,{server.url}", ca_hash=pin)
            return server.upgrades

    assert asyncio.run(asyncio.wait_for(go(), 30)) == []
    with pytest.raises(ValueError, match="https://"):
        legacygpu.Admin("http://127.0.0.1:8000", ca_hash=pin)
    with pytest.raises(ValueError, match="https://"):
        legacygpu.Admin("http://127.0.0.1:8000", api_key=token)


def test_client_tokens_are_split_as_the_rust_sdk_does():
    pin = "ab" * 32
    assert tls.split_token(f"lgj1-{pin}-{'x' * 16}") == (pin, "x" * 16)
    assert tls.split_token(f" lgj1-{pin.upper()}-{'x' * 43} ") == (pin, "x" * 43)
    assert tls.split_token("the-cluster-token") == (None, "the-cluster-token")
    for bad in ["lgj1-", "lgj1-" + pin, f"lgj1-{pin}-short", f"lgj1-{pin}x{'x' * 20}", f"lgj1-{'zz' * 32}-{'x' * 20}",
                f"lgj1-{pin}-{'x' * 10} {'x' * 10}", f"lgj1-{pin[:-1]}-{'x' * 20}"]:
        with pytest.raises(ValueError, match="not a join token"):
            tls.split_token(bad)
    assert tls.check_ca_hash(f"sha256:{pin.upper()}") == pin
    with pytest.raises(ValueError, match="differs"):
        legacygpu.AsyncClient("wss://127.0.0.1:8765", token=f"lgj1-{pin}-{'x' * 20}", ca_hash="cd" * 32)
    with pytest.raises(ValueError, match="pins"):
        legacygpu.AsyncClient("wss://127.0.0.1:8765", token=f"lgj1-{pin}-{'x' * 20}", ca_file="ca.pem")


# ---- the real coordinator ------------------------------------------------------------

REMOTE = ["--not-local", "127.0.0.1"]


@pytest.fixture(scope="module")
def tls_cluster():
    """A coordinator that takes this machine for another (TLS only), with an
    admin API key, and a worker joined over wss:// with the join token."""
    c = Coordinator([*FAST, *REMOTE, "--api-keys", "admin-key-1:admin"])
    assert len(c.ca_hash) == 64 and c.client_token.startswith(f"lgj1-{c.ca_hash}-"), "the banner's TLS lines"
    w = worker(c.wss_url, "tls-w1", "--join", c.worker_token, "--slots", "2", "--no-gpu")
    admin = legacygpu.Admin(c.https_url, api_key="admin-key-1", ca_file=c.ca_file)
    until(lambda: admin.workers()["total"] >= 1, "the worker joined over wss://")
    yield c
    w.kill9()
    c.kill9()


@needs_chain
def test_the_client_token_pins_the_ca_and_presents_its_secret(tls_cluster):
    with legacygpu.Client(tls_cluster.wss_url, token=tls_cluster.client_token) as client:
        assert client.run("echo", {"over": "wss"}, timeout=30) == {"over": "wss"}
    # The whole token is no credential: only its secret is one.
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Client(tls_cluster.wss_url, token=tls_cluster.client_token.replace("lgj1-", "lgj2-"),
                         ca_hash=tls_cluster.ca_hash)


@needs_chain
def test_the_banner_pin_or_the_data_dir_ca_with_the_secret(tls_cluster):
    secret = tls_cluster.client_token[len("lgj1-") + 65:]  # after the pin and its "-"
    with legacygpu.Client(tls_cluster.wss_url, token=secret, ca_hash=tls_cluster.ca_hash) as client:
        assert client.run("echo", {"by": "pin"}, timeout=30) == {"by": "pin"}
    with legacygpu.Client(tls_cluster.wss_url, token=secret, ca_file=tls_cluster.ca_file) as client:
        assert client.run("echo", {"by": "ca.pem"}, timeout=30) == {"by": "ca.pem"}
    # And a name the certificate has (localhost), beside the address.
    with legacygpu.Client(tls_cluster.wss_url.replace("127.0.0.1", "localhost"), token=secret,
                          ca_hash=tls_cluster.ca_hash) as client:
        assert client.run("echo", {"by": "name"}, timeout=30) == {"by": "name"}


def test_plaintext_from_another_machine_is_refused(tls_cluster):
    with pytest.raises(legacygpu.Unauthorized) as e:
        legacygpu.Client(tls_cluster.ws_url, token="admin-key-1", reconnect=False)
    assert e.value.status == 403


@needs_chain
def test_a_wrong_pin_is_refused_by_the_real_coordinator(tls_cluster):
    wrong = "0" * 64
    with pytest.raises(legacygpu.ConnectFailed, match="pinned CA hash"):
        legacygpu.Client(tls_cluster.wss_url, token="admin-key-1", ca_hash=wrong, connect_timeout_s=5)
    with pytest.raises(legacygpu.ConnectFailed, match="pinned CA hash"):
        legacygpu.Admin(tls_cluster.https_url, api_key="admin-key-1", ca_hash=wrong).health()


@needs_chain
def test_admin_over_https(tls_cluster):
    admin = legacygpu.Admin(tls_cluster.https_url, api_key="admin-key-1", ca_hash=tls_cluster.ca_hash)
    assert admin.health()["total_workers"] == 1
    tokens = admin.tokens()
    assert tokens["ca_sha256"] == tls_cluster.ca_hash
    assert (tokens["client_token"], tokens["worker_token"]) == (tls_cluster.client_token, tls_cluster.worker_token)
    by_file = legacygpu.Admin(tls_cluster.https_url, api_key="admin-key-1", ca_file=tls_cluster.ca_file)
    assert by_file.config()["store"] == "sqlite"
    # A client token as the key: its pin secures https://, its secret is
    # sent, and the API (which takes API keys) refuses it after TLS succeeded.
    with pytest.raises(legacygpu.Unauthorized) as e:
        legacygpu.Admin(tls_cluster.https_url, api_key=tls_cluster.client_token).health()
    assert e.value.status == 401


@needs_chain
def test_rotated_client_token(procs):
    c = Coordinator([*FAST, *REMOTE, "--api-keys", "admin-key-1:admin"])
    procs.append(c)
    admin = legacygpu.Admin(c.https_url, api_key="admin-key-1", ca_hash=c.ca_hash)
    with pytest.raises(ValueError):
        admin.rotate_tokens("gamers")
    fresh = admin.rotate_tokens("client")
    assert fresh["client_token"] != c.client_token and fresh["worker_token"] == c.worker_token
    assert fresh["ca_sha256"] == c.ca_hash and admin.tokens() == fresh
    with pytest.raises(legacygpu.Unauthorized):
        legacygpu.Client(c.wss_url, token=c.client_token, reconnect=False)
    with legacygpu.Client(c.wss_url, token=fresh["client_token"]) as client:
        assert client.connected
    both = admin.rotate_tokens()
    assert both["worker_token"] != c.worker_token and both["client_token"] != fresh["client_token"]

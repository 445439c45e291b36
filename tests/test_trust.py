"""Trust primitives: the CA and pinned TLS over real wss on loopback, the datastore's secrets on
disk, and agent identities (keys, client IDs, signed nonces)."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import ssl
import stat
import subprocess
import sys
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from agent import identity as agent_identity
from agent.identity import AgentIdentity
from velotui.server import client_identity, datastore, tls
from velotui.server.datastore import Datastore, DatastoreError
from velotui.wire.tls import pinned_client_ssl_context

POSIX = os.name == "posix"
needs_posix_modes = pytest.mark.skipif(not POSIX, reason="file modes are POSIX-only")


def file_mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- TLS ----------------------------------------------------------------------------------------


def write_server_files(folder: Path, ca_cert: bytes, ca_key: bytes, hostnames: list[str]) -> Path:
    cert_pem, key_pem = tls.create_server_certificate(ca_cert, ca_key, hostnames, [])
    (folder / "server.pem").write_bytes(cert_pem)
    (folder / "server.key").write_bytes(key_pem)
    return folder


@asynccontextmanager
async def echo_server(cert_path: Path, key_path: Path) -> AsyncIterator[int]:
    """A real wss echo server on 127.0.0.1; yields its port."""

    async def echo(connection: ServerConnection) -> None:
        async for message in connection:
            await connection.send(message)

    context = tls.server_ssl_context(cert_path, key_path)
    async with serve(echo, "127.0.0.1", 0, ssl=context) as server:
        yield server.sockets[0].getsockname()[1]


@pytest.fixture
def authority() -> tuple[bytes, bytes]:
    return tls.create_certificate_authority()


async def test_pinned_client_exchanges_messages_over_wss(tmp_path, authority):
    ca_cert, ca_key = authority
    write_server_files(tmp_path, ca_cert, ca_key, ["velotui.example"])
    async with echo_server(tmp_path / "server.pem", tmp_path / "server.key") as port:
        # Reached by IP address (127.0.0.1 is always a SAN) and by each name in the certificate.
        for server_hostname in (None, "localhost", "velotui.example"):
            extra = {} if server_hostname is None else {"server_hostname": server_hostname}
            async with connect(
                f"wss://127.0.0.1:{port}",
                ssl=pinned_client_ssl_context(ca_cert.decode("ascii")),
                compression=None,
                **extra,
            ) as client:
                await client.send(b"\x81\x00 hello")
                assert await client.recv() == b"\x81\x00 hello"


async def test_client_pinned_to_another_ca_is_refused(tmp_path, authority):
    ca_cert, ca_key = authority
    other_ca_cert, _ = tls.create_certificate_authority("someone else's CA")
    write_server_files(tmp_path, ca_cert, ca_key, [])
    async with echo_server(tmp_path / "server.pem", tmp_path / "server.key") as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(
                f"wss://127.0.0.1:{port}", ssl=pinned_client_ssl_context(other_ca_cert)
            ):
                pass


async def test_certificate_without_the_host_among_its_names_is_refused(tmp_path, authority):
    ca_cert, ca_key = authority
    write_server_files(tmp_path, ca_cert, ca_key, ["velotui.example"])
    async with echo_server(tmp_path / "server.pem", tmp_path / "server.key") as port:
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(
                f"wss://127.0.0.1:{port}",
                ssl=pinned_client_ssl_context(ca_cert),
                server_hostname="elsewhere.example",
            ):
                pass


def test_pinned_context_trusts_only_the_given_ca(authority):
    ca_cert, _ = authority
    context = pinned_client_ssl_context(ca_cert)
    assert [dict(entry[0] for entry in ca["subject"]) for ca in context.get_ca_certs()] == [
        {"commonName": "velotui CA"}
    ]
    assert context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_pinning_a_certificate_that_is_not_a_ca_is_refused(authority):
    ca_cert, ca_key = authority
    server_cert, _ = tls.create_server_certificate(ca_cert, ca_key, [], [])
    with pytest.raises(ValueError):
        pinned_client_ssl_context(server_cert)
    with pytest.raises(ValueError):
        pinned_client_ssl_context("not a certificate")


def test_server_certificate_names_every_host_and_serves_only_tls_servers(authority):
    ca_cert, ca_key = authority
    cert_pem, _ = tls.create_server_certificate(
        ca_cert, ca_key, ["hunt.example", "10.1.2.3", "Bücher.example"], ["192.0.2.7", "fe80::1"]
    )
    certificate = x509.load_pem_x509_certificate(cert_pem)
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {
        "hunt.example",
        "localhost",
        "xn--bcher-kva.example",
    }
    assert set(names.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address(text)
        for text in ("10.1.2.3", "192.0.2.7", "fe80::1", "127.0.0.1", "::1")
    }
    usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert not certificate.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    ca_certificate = x509.load_pem_x509_certificate(ca_cert)
    assert certificate.issuer == ca_certificate.subject
    certificate.verify_directly_issued_by(ca_certificate)


def test_server_certificate_needs_the_ca_key_that_matches_the_ca(authority):
    ca_cert, _ = authority
    _, other_ca_key = tls.create_certificate_authority()
    with pytest.raises(ValueError):
        tls.create_server_certificate(ca_cert, other_ca_key, [], [])


def test_server_certificate_refuses_an_unparseable_ip_address(authority):
    ca_cert, ca_key = authority
    with pytest.raises(ValueError):
        tls.create_server_certificate(ca_cert, ca_key, [], ["300.1.1.1"])


# --- Datastore ----------------------------------------------------------------------------------


CREATED_FILES = ("ca.pem", "ca.key", "server.pem", "server.key", "enrolment_secret", "api_token")


def datastore_files(root: Path) -> dict[str, bytes]:
    return {name: (root / name).read_bytes() for name in CREATED_FILES}


def test_first_open_creates_keys_and_secrets(tmp_path):
    store = Datastore.open(tmp_path / "store")
    root = tmp_path / "store"
    assert store.root == root
    assert all((root / name).is_file() for name in CREATED_FILES)
    # 32 random bytes in unpadded URL-safe base64.
    assert len(base64.urlsafe_b64decode(store.enrolment_secret() + "=")) == 32
    assert len(store.api_token()) >= 32
    assert store.api_token() != store.enrolment_secret()
    for folder in (store.uploads_location(), store.exports_dir, store.logs_dir):
        assert folder.is_dir() and folder.parent == root
    assert store.database_path == root / "velotui.db"
    assert store.server_address_file == root / "server.json"
    assert store.ca_pem().startswith("-----BEGIN CERTIFICATE-----")


@needs_posix_modes
def test_first_open_keeps_secrets_private(tmp_path):
    old_umask = os.umask(0o022)
    try:
        store = Datastore.open(tmp_path / "store")
    finally:
        os.umask(old_umask)
    assert file_mode(store.root) == 0o700
    for path in (
        store.ca_key_path,
        store.server_key_path,
        store.enrolment_secret_path,
        store.api_token_path,
    ):
        assert file_mode(path) == 0o600, path.name
    for folder in (store.uploads_location(), store.exports_dir, store.logs_dir):
        assert file_mode(folder) == 0o700


@needs_posix_modes
def test_open_tightens_an_existing_folder(tmp_path):
    root = tmp_path / "store"
    root.mkdir(mode=0o755)
    root.chmod(0o755)
    Datastore.open(root)
    assert file_mode(root) == 0o700


def test_second_open_reuses_everything(tmp_path):
    first = Datastore.open(tmp_path / "store")
    before = datastore_files(first.root)
    second = Datastore.open(tmp_path / "store")
    assert datastore_files(second.root) == before
    assert second.api_token() == first.api_token()


def test_concurrent_first_opens_agree_on_one_ca(tmp_path):
    with ThreadPoolExecutor(max_workers=4) as pool:
        stores = list(pool.map(lambda _: Datastore.open(tmp_path / "store"), range(4)))
    assert len({store.ca_pem() for store in stores}) == 1
    assert len({store.api_token() for store in stores}) == 1
    ca = x509.load_pem_x509_certificate(stores[0].ca_pem().encode())
    server = x509.load_pem_x509_certificate(stores[0].server_cert_path.read_bytes())
    server.verify_directly_issued_by(ca)


async def test_datastore_certificates_serve_pinned_wss(tmp_path):
    store = Datastore.open(tmp_path / "store")
    async with echo_server(store.server_cert_path, store.server_key_path) as port:
        for server_hostname in ("localhost", *datastore._machine_hostnames()):
            async with connect(
                f"wss://127.0.0.1:{port}",
                ssl=pinned_client_ssl_context(store.ca_pem()),
                server_hostname=server_hostname,
            ) as client:
                await client.send("ping")
                assert await client.recv() == "ping"


def test_default_location_follows_xdg_data_home(tmp_path, monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("XDG_DATA_HOME is the Linux convention")
    monkeypatch.delenv("VELOTUI_DATASTORE", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert datastore.default_datastore_path() == tmp_path / "xdg" / "velotui"
    store = Datastore.open(None)
    assert store.root == tmp_path / "xdg" / "velotui"
    assert store.ca_cert_path.is_file()
    # A relative XDG_DATA_HOME is invalid by the spec and falls back to ~/.local/share.
    monkeypatch.setenv("XDG_DATA_HOME", "relative/data")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert datastore.default_datastore_path() == tmp_path / "home" / ".local" / "share" / "velotui"


def test_velotui_datastore_overrides_the_default(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VELOTUI_DATASTORE", str(tmp_path / "chosen"))
    store = Datastore.open()
    assert store.root == tmp_path / "chosen"
    assert store.api_token_path.is_file()
    assert not (tmp_path / "xdg").exists()


def test_leftover_temp_files_from_a_crash_are_ignored(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    # What a crash mid-write leaves: a half-written temporary next to where the file would be.
    (root / ".api_token.k3j2h1.tmp").write_text("half-writ")
    (root / ".ca.key.a1b2c3.tmp").write_bytes(b"-----BEGIN PRIVATE KEY-----\nMIG")
    (root / ".server.json.z9y8x7.tmp").write_text('{"url": "wss://half')
    store = Datastore.open(root)
    assert store.api_token() != "half-writ"
    assert store.read_server_address() is None
    ca = x509.load_pem_x509_certificate(store.ca_pem().encode())
    server = x509.load_pem_x509_certificate(store.server_cert_path.read_bytes())
    server.verify_directly_issued_by(ca)
    leftovers = {path.name for path in root.iterdir() if path.name.endswith(".tmp")}
    assert leftovers <= {".server.json.z9y8x7.tmp"}


def test_crash_between_ca_key_and_ca_certificate_is_recovered(tmp_path):
    root = tmp_path / "store"
    root.mkdir()
    # The key is written before the certificate, so a key alone was never pinned by any agent.
    _, orphan_key = tls.create_certificate_authority()
    (root / "ca.key").write_bytes(orphan_key)
    store = Datastore.open(root)
    assert store.ca_key_path.read_bytes() != orphan_key
    server = x509.load_pem_x509_certificate(store.server_cert_path.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(store.ca_pem().encode()))


def test_lost_ca_key_is_reported_not_replaced(tmp_path):
    store = Datastore.open(tmp_path / "store")
    pinned = store.ca_pem()
    store.ca_key_path.unlink()
    with pytest.raises(DatastoreError, match=r"ca\.key"):
        Datastore.open(tmp_path / "store")
    assert store.ca_pem() == pinned


def test_lost_server_certificate_is_reissued_from_the_same_ca(tmp_path):
    store = Datastore.open(tmp_path / "store")
    pinned = store.ca_pem()
    store.server_key_path.unlink()
    reopened = Datastore.open(tmp_path / "store")
    assert reopened.ca_pem() == pinned
    assert reopened.server_key_path.is_file()
    server = x509.load_pem_x509_certificate(reopened.server_cert_path.read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate(pinned.encode()))


def test_server_address_round_trip(tmp_path):
    store = Datastore.open(tmp_path / "store")
    assert store.read_server_address() is None
    store.write_server_address("wss://127.0.0.1:8443")
    assert store.read_server_address() == "wss://127.0.0.1:8443"
    assert json.loads(store.server_address_file.read_text())["url"] == "wss://127.0.0.1:8443"
    store.write_server_address("wss://[::1]:9000")
    assert Datastore.open(tmp_path / "store").read_server_address() == "wss://[::1]:9000"
    store.clear_server_address()
    assert store.read_server_address() is None
    store.server_address_file.write_text("not json")
    assert store.read_server_address() is None


def test_read_secret_stays_inside_the_folder(tmp_path):
    store = Datastore.open(tmp_path / "store")
    (tmp_path / "outside").write_text("nope")
    for name in ("../outside", "", ".lock", "uploads/../../outside", "/etc/passwd"):
        with pytest.raises(ValueError):
            store.read_secret(name)
    with pytest.raises(FileNotFoundError):
        store.read_secret("no_such_secret")
    assert store.read_secret("api_token") == store.api_token()


# --- Agent identity -----------------------------------------------------------------------------

CLIENT_ID_FORMAT = re.compile(r"C\.[0-9a-f]{16}")


def test_agent_identity_is_created_once_and_reused(tmp_path):
    state = tmp_path / "state"
    first = AgentIdentity.load_or_create(state)
    assert (state / "agent.key").is_file()
    second = AgentIdentity.load_or_create(state)
    assert second.client_id == first.client_id
    assert second.public_key_bytes == first.public_key_bytes
    assert len(first.public_key_bytes) == 32
    assert AgentIdentity.load_or_create(tmp_path / "other").client_id != first.client_id


@needs_posix_modes
def test_agent_key_is_private(tmp_path):
    old_umask = os.umask(0o022)
    try:
        AgentIdentity.load_or_create(tmp_path / "state")
    finally:
        os.umask(old_umask)
    assert file_mode(tmp_path / "state") == 0o700
    assert file_mode(tmp_path / "state" / "agent.key") == 0o600
    assert [path.name for path in (tmp_path / "state").iterdir()] == ["agent.key"]


def test_damaged_agent_key_is_reported_not_replaced(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "agent.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nMC4")
    with pytest.raises(ValueError, match=r"agent\.key"):
        AgentIdentity.load_or_create(state)
    assert (state / "agent.key").read_bytes() == b"-----BEGIN PRIVATE KEY-----\nMC4"
    _, ec_key = tls.create_certificate_authority()
    (state / "agent.key").write_bytes(ec_key)
    with pytest.raises(ValueError, match="Ed25519"):
        AgentIdentity.load_or_create(state)


def test_signed_nonce_verifies(tmp_path):
    agent = AgentIdentity.load_or_create(tmp_path / "state")
    nonce = client_identity.new_nonce()
    signature = agent.sign(nonce)
    assert client_identity.verify_signature(agent.public_key_bytes, nonce, signature)


def test_signature_by_another_key_or_for_another_nonce_fails(tmp_path):
    agent = AgentIdentity.load_or_create(tmp_path / "state")
    impostor = AgentIdentity.load_or_create(tmp_path / "impostor")
    nonce = client_identity.new_nonce()
    assert not client_identity.verify_signature(agent.public_key_bytes, nonce, impostor.sign(nonce))
    old_signature = agent.sign(client_identity.new_nonce())
    assert not client_identity.verify_signature(agent.public_key_bytes, nonce, old_signature)


def test_malformed_keys_and_signatures_return_false(tmp_path):
    agent = AgentIdentity.load_or_create(tmp_path / "state")
    nonce = client_identity.new_nonce()
    signature = agent.sign(nonce)
    key = agent.public_key_bytes
    verify = client_identity.verify_signature
    assert not verify(b"", nonce, signature)
    assert not verify(b"\x00" * 31, nonce, signature)
    assert not verify(key + b"\x00", nonce, signature)
    assert not verify(b"\xff" * 32, nonce, signature)
    assert not verify(key, nonce, b"")
    assert not verify(key, nonce, signature[:63])
    assert not verify(key, nonce, signature + b"\x00")
    assert not verify(key, nonce, b"\xff" * 64)
    assert not verify(key, nonce, bytes(64))
    assert not verify("not bytes", nonce, signature)  # type: ignore[arg-type]
    assert not verify(key, None, signature)  # type: ignore[arg-type]
    assert not verify(key, nonce, signature.hex())  # type: ignore[arg-type]
    assert not verify(bytearray(key), nonce, signature)  # type: ignore[arg-type]


def test_agent_and_server_derive_the_same_client_id(tmp_path):
    for number in range(5):
        agent = AgentIdentity.load_or_create(tmp_path / f"state{number}")
        server_side = client_identity.client_id_for(agent.public_key_bytes)
        assert agent.client_id == server_side
        assert agent_identity.client_id_for(agent.public_key_bytes) == server_side
        assert CLIENT_ID_FORMAT.fullmatch(agent.client_id)
        assert client_identity.CLIENT_ID_PATTERN.fullmatch(agent.client_id)
    fixed_key = bytes(range(32))
    assert agent_identity.client_id_for(fixed_key) == client_identity.client_id_for(fixed_key)
    assert client_identity.client_id_for(fixed_key) == "C.630dcd2966c43366"


def test_client_id_needs_a_32_byte_key():
    for derive in (agent_identity.client_id_for, client_identity.client_id_for):
        for bad in (b"", b"\x00" * 31, b"\x00" * 33, "x" * 32):
            with pytest.raises(ValueError):
                derive(bad)  # type: ignore[arg-type]


def test_nonces_are_fresh():
    nonces = {client_identity.new_nonce() for _ in range(100)}
    assert len(nonces) == 100
    assert all(len(nonce) == 32 for nonce in nonces)


def test_secrets_compare_by_value():
    assert client_identity.secrets_equal("s3cret-value", "s3cret-value")
    assert not client_identity.secrets_equal("s3cret-value", "s3cret-valuf")
    assert not client_identity.secrets_equal("s3cret-value", "s3cret")
    assert not client_identity.secrets_equal("", "s3cret")
    assert client_identity.secrets_equal("pässwörd", "pässwörd")
    assert not client_identity.secrets_equal("s3cret", None)  # type: ignore[arg-type]
    assert not client_identity.secrets_equal(b"s3cret", "s3cret")  # type: ignore[arg-type]


def test_agent_identity_does_not_import_the_server():
    code = (
        "import sys, agent.identity; "
        "print(sorted(name for name in sys.modules if name.startswith('velotui')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    # The wire's identity module (where the client ID is derived) and nothing of the server.
    assert result.stdout.strip() == "['velotui', 'velotui.wire', 'velotui.wire.identity']"

"""The datastore folder: where the server keeps its keys, secrets, database, uploads and exports.

The first open creates the CA, the server certificate, the enrolment secret and the operator API
token; every later open reuses them, because agents pin this CA and carry this secret in their
config. Every file is written atomically (temporary file in the same folder, fsync, rename), so a
crash leaves either the old file, the new one, or neither, never half of one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cryptography import x509

from velotui.data_folders import user_data_folder
from velotui.durable_files import temp_file_pattern, write_file_atomically
from velotui.server import tls
from velotui.server.data.database import POSTGRESQL_SCHEMES

DATASTORE_ENV_VAR = "VELOTUI_DATASTORE"
APP_FOLDER_NAME = "velotui"

SECRET_MODE = 0o600
PUBLIC_MODE = 0o644
FOLDER_MODE = 0o700

CA_CERT_NAME = "ca.pem"
CA_KEY_NAME = "ca.key"
SERVER_CERT_NAME = "server.pem"
SERVER_KEY_NAME = "server.key"
ENROLMENT_SECRET_NAME = "enrolment_secret"
API_TOKEN_NAME = "api_token"
SERVER_ADDRESS_NAME = "server.json"
FRONTENDS_DIR_NAME = "frontends"
DATABASE_NAME = "velotui.db"
# Where the datastore's parts are when not in the folder: {"database": "postgresql://..."}
# (absent: SQLite in DATABASE_NAME), {"uploads": "/shared/path"} (absent: UPLOADS_NAME in it).
SETTINGS_NAME = "datastore.json"
UPLOADS_NAME = "uploads"
LOCK_NAME = ".lock"

# Files that only the initialisation writes, always while holding the lock; their leftover
# temporary files can therefore be removed safely at the next initialisation.
_INITIALISED_NAMES = (
    CA_CERT_NAME,
    CA_KEY_NAME,
    SERVER_CERT_NAME,
    SERVER_KEY_NAME,
    ENROLMENT_SECRET_NAME,
    API_TOKEN_NAME,
)


class DatastoreError(Exception):
    """The datastore folder is damaged in a way that must not be repaired silently."""


def default_datastore_path() -> Path:
    """The datastore folder used when none is given.

    ``$VELOTUI_DATASTORE`` when set; otherwise the per-user data folder: ``$XDG_DATA_HOME/velotui``
    or ``~/.local/share/velotui`` on Linux and other Unixes, ``~/Library/Application
    Support/velotui`` on macOS, ``%LOCALAPPDATA%\\velotui`` on Windows.
    """
    override = os.environ.get(DATASTORE_ENV_VAR, "").strip()
    if override:
        return Path(override).expanduser()
    return user_data_folder(APP_FOLDER_NAME)


class Datastore:
    """One datastore folder. Use ``Datastore.open`` to get one that is ready to use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def open(cls, path: Path | None = None) -> Datastore:
        """Open the datastore at ``path`` (default: ``default_datastore_path()``).

        Creates the folder (mode 0700) and, on first use, the CA, the server certificate, the
        enrolment secret and the API token; later opens reuse them. Raises DatastoreError when
        the CA certificate exists but its key is gone, and OSError when the folder cannot be
        created or written.
        """
        root = (path if path is not None else default_datastore_path()).expanduser().absolute()
        datastore = cls(root)
        datastore._initialise()
        return datastore

    # Paths.

    @property
    def database_path(self) -> Path:
        return self.root / DATABASE_NAME

    @property
    def settings_path(self) -> Path:
        return self.root / SETTINGS_NAME

    def uploads_location(self) -> Path:
        """The uploads folder: ``"uploads"`` in the settings (relative to the datastore when
        not absolute), else ``uploads`` in the datastore. Raises DatastoreError when the
        settings are damaged."""
        configured = self.read_settings().get("uploads")
        if configured is None:
            return self.root / UPLOADS_NAME
        if not isinstance(configured, str) or not configured.strip():
            raise DatastoreError(f'{self.settings_path}: "uploads" must be a folder path')
        return self.root / Path(configured).expanduser()

    def database_url(self) -> str | None:
        """The PostgreSQL database this datastore uses; None: SQLite, ``database_path``."""
        url = self.read_settings().get("database")
        return url if isinstance(url, str) and url else None

    def database_target(self) -> Path | str:
        """What ``Database.open`` takes: the PostgreSQL URL, else the SQLite file's path."""
        return self.database_url() or self.database_path

    def set_database_url(self, url: str | None) -> None:
        """Record the PostgreSQL database every later command on this datastore uses (None or
        "sqlite": back to the SQLite file). Raises ValueError for anything else."""
        url = checked_database_url(url)
        with _exclusive_lock(self.root / LOCK_NAME):
            settings = self.read_settings()
            if url is None:
                settings.pop("database", None)
            else:
                settings["database"] = url
            self.write_settings(settings)

    def read_settings(self) -> dict[str, Any]:
        """The whole of ``datastore.json`` ({} when there is none). Raises DatastoreError when
        it is not a JSON object."""
        try:
            text = self.settings_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            settings = json.loads(text)
        except ValueError as error:
            raise DatastoreError(f"{self.settings_path} is not JSON: {error}") from None
        if not isinstance(settings, dict):
            raise DatastoreError(f"{self.settings_path} is not a JSON object")
        return settings

    def write_settings(self, settings: dict[str, Any]) -> None:
        """Replace ``datastore.json`` with ``settings`` (atomically; for the server's user
        alone: a database URL may hold a password). Callers that change one key hold the
        datastore's lock around reading and writing (``set_database_url``)."""
        write_file_atomically(self.settings_path,
                              (json.dumps(settings, indent=2, sort_keys=True) + "\n").encode(),
                              SECRET_MODE)

    def record_uploads_location(self, folder: Path) -> Path:
        """Keep uploads in ``folder`` from now on (created when missing); the absolute path
        recorded. Files already in the old location stay there. Raises OSError when the folder
        cannot be created, DatastoreError when the settings are damaged."""
        folder = folder.expanduser().absolute()
        folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        # Read and write under the lock, so another command recording another key keeps it.
        with _exclusive_lock(self.root / LOCK_NAME):
            settings = self.read_settings()
            settings["uploads"] = str(folder)
            self.write_settings(settings)
        return folder

    @property
    def exports_dir(self) -> Path:
        return self.root / "exports"

    @property
    def artifacts_dir(self) -> Path:
        """Artifact definitions imported into this server's library, one YAML file each."""
        return self.root / "artifacts"

    @property
    def logs_dir(self) -> Path:
        return self.root / "logs"

    @property
    def server_address_file(self) -> Path:
        return self.root / SERVER_ADDRESS_NAME

    @property
    def ca_cert_path(self) -> Path:
        return self.root / CA_CERT_NAME

    @property
    def ca_key_path(self) -> Path:
        return self.root / CA_KEY_NAME

    @property
    def server_cert_path(self) -> Path:
        return self.root / SERVER_CERT_NAME

    @property
    def server_key_path(self) -> Path:
        return self.root / SERVER_KEY_NAME

    @property
    def enrolment_secret_path(self) -> Path:
        return self.root / ENROLMENT_SECRET_NAME

    @property
    def api_token_path(self) -> Path:
        return self.root / API_TOKEN_NAME

    # Contents.

    def read_secret(self, name: str) -> str:
        """The text of the file ``name`` in the datastore folder, without surrounding whitespace.

        Raises ValueError for a name that is not a plain file name, FileNotFoundError when the
        file does not exist.
        """
        if not name or name != Path(name).name or name.startswith(".") or "\\" in name:
            raise ValueError(f"not a datastore file name: {name!r}")
        return (self.root / name).read_text(encoding="utf-8").strip()

    def ca_pem(self) -> str:
        """The CA certificate in PEM, as pinned in agent configs."""
        return self.read_secret(CA_CERT_NAME) + "\n"

    def enrolment_secret(self) -> str:
        """The secret an agent presents on first contact."""
        return self.read_secret(ENROLMENT_SECRET_NAME)

    def api_token(self) -> str:
        """The token the operator API requires."""
        return self.read_secret(API_TOKEN_NAME)

    @property
    def frontends_dir(self) -> Path:
        """One file per running server (frontend) of this datastore: its URL and process."""
        return self.root / FRONTENDS_DIR_NAME

    def _frontend_file(self) -> Path:
        return self.frontends_dir / f"{socket.gethostname()}-{os.getpid()}.json"

    def write_server_address(self, url: str) -> None:
        """Record the running server's listen URL so that the command line can find it: in
        this process's own file (several frontends may serve one datastore), and in
        ``server.json``, which names the frontend that started last."""
        document = json.dumps({"url": url, "pid": os.getpid(),
                               "host": socket.gethostname()}).encode("utf-8")
        _make_private_folder(self.frontends_dir)
        write_file_atomically(self._frontend_file(), document, SECRET_MODE)
        with _exclusive_lock(self.root / LOCK_NAME):
            write_file_atomically(self.server_address_file, document, SECRET_MODE)

    def read_server_address(self) -> str | None:
        """The URL recorded by ``write_server_address``; None when none is recorded or readable."""
        return _url_in(self.server_address_file)

    def frontend_addresses(self) -> list[str]:
        """The URLs of every running server of this datastore that recorded one (a server of
        this host that died without clearing its file is left out)."""
        return sorted(url for path in self._live_frontend_files()
                      if (url := _url_in(path)) is not None)

    def _live_frontend_files(self) -> list[Path]:
        if not self.frontends_dir.is_dir():
            return []
        here = socket.gethostname()
        live = []
        for path in sorted(self.frontends_dir.glob("*.json")):
            host, _, pid = path.stem.rpartition("-")
            if host == here and pid.isdigit() and not _process_exists(int(pid)):
                continue
            live.append(path)
        return live

    def running_server_pid(self) -> int | None:
        """The process id of the server that recorded its address here, when that process is
        still alive (a server killed outright leaves its record behind); else None."""
        try:
            document = json.loads(self.server_address_file.read_text(encoding="utf-8"))
            pid = int(document["pid"])
        except (OSError, ValueError, TypeError, KeyError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid  # alive, another user's
        return pid

    def clear_server_address(self) -> None:
        """Forget this server's URL (a server calls this as it stops); ``server.json`` then
        names another running frontend, or goes when it named this one and none is left."""
        with contextlib.suppress(FileNotFoundError):
            self._frontend_file().unlink()
        with _exclusive_lock(self.root / LOCK_NAME):
            try:
                named = json.loads(self.server_address_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return
            ours = isinstance(named, dict) and named.get("pid") == os.getpid() \
                and named.get("host", socket.gethostname()) == socket.gethostname()
            if not ours:
                return  # another frontend's
            for other in self._live_frontend_files():
                with contextlib.suppress(OSError):
                    write_file_atomically(self.server_address_file, other.read_bytes(),
                                          SECRET_MODE)
                    return
            with contextlib.suppress(FileNotFoundError):
                self.server_address_file.unlink()

    def ensure_server_names(self, names: list[str]) -> bool:
        """Make the server certificate valid for every host name or IP address in ``names``
        (re-issuing it from the same CA when one is missing); True when it was re-issued.
        Agents pin the CA, so they keep trusting the server; a running server must restart to
        present the new certificate."""
        current = x509.load_pem_x509_certificate(self.server_cert_path.read_bytes())
        try:
            alternative = current.extensions.get_extension_for_class(
                x509.SubjectAlternativeName
            ).value
        except x509.ExtensionNotFound:
            alternative = x509.SubjectAlternativeName([])
        dns = list(alternative.get_values_for_type(x509.DNSName))
        ips = [str(ip) for ip in alternative.get_values_for_type(x509.IPAddress)]
        missing = False
        for name in names:
            name = name.strip("[]")
            try:
                address = str(ipaddress.ip_address(name))
            except ValueError:
                if name.lower() not in (d.lower() for d in dns):
                    dns.append(name)
                    missing = True
            else:
                if address not in ips and address not in ("0.0.0.0", "::"):
                    ips.append(address)
                    missing = True
        if not missing:
            return False
        with _exclusive_lock(self.root / LOCK_NAME):
            cert_pem, key_pem = tls.create_server_certificate(
                self.ca_cert_path.read_bytes(), self.ca_key_path.read_bytes(),
                hostnames=dns, ip_addresses=ips,
            )
            write_file_atomically(self.server_key_path, key_pem, SECRET_MODE)
            write_file_atomically(self.server_cert_path, cert_pem, PUBLIC_MODE)
        return True

    # Initialisation.

    def _initialise(self) -> None:
        _make_private_folder(self.root)
        for folder in (self.root / UPLOADS_NAME, self.exports_dir, self.logs_dir):
            _make_private_folder(folder)
        self._make_database_private()
        # Two processes opening a fresh datastore at once (console and `velotui serve`) must not
        # each make a CA: the second would overwrite the first's key under the first's certificate.
        with _exclusive_lock(self.root / LOCK_NAME):
            self._remove_leftover_temp_files()
            ca_created = self._ensure_certificate_authority()
            self._ensure_server_certificate(reissue=ca_created)
            for name in (ENROLMENT_SECRET_NAME, API_TOKEN_NAME):
                if not (self.root / name).is_file():
                    # 32 random bytes, URL-safe base64: safe in config files and HTTP headers.
                    secret = secrets.token_urlsafe(32)
                    write_file_atomically(self.root / name, secret.encode("ascii"), SECRET_MODE)

    def _make_database_private(self) -> None:
        """The database file exists with mode 0600 before SQLite opens it: SQLite would create
        it under the umask, and it gives its -wal and -shm files the database file's mode."""
        descriptor = os.open(self.database_path, os.O_RDWR | os.O_CREAT, SECRET_MODE)
        os.close(descriptor)
        suffixes = ("", "-wal", "-shm", "-journal")
        # Files an older version left more open: the database and its journals, and the logs.
        for path in [*(self.root / (DATABASE_NAME + suffix) for suffix in suffixes),
                     *self.logs_dir.iterdir()]:
            _make_private_file(path)

    def _ensure_certificate_authority(self) -> bool:
        have_cert = self.ca_cert_path.is_file()
        have_key = self.ca_key_path.is_file()
        if have_cert and have_key:
            return False
        if have_cert:
            # Agents pin this certificate; a new CA would silently cut every one of them off.
            raise DatastoreError(
                f"{self.ca_key_path} is missing but {self.ca_cert_path} exists: restore the key "
                "from a backup, or start a new datastore and re-issue every agent's config"
            )
        # The key is written first, so a certificate on disk always has its key. A key without a
        # certificate is what a crash between the two writes leaves; no agent can have pinned it.
        cert_pem, key_pem = tls.create_certificate_authority()
        write_file_atomically(self.ca_key_path, key_pem, SECRET_MODE)
        write_file_atomically(self.ca_cert_path, cert_pem, PUBLIC_MODE)
        return True

    def _ensure_server_certificate(self, reissue: bool) -> None:
        if not reissue and self.server_cert_path.is_file() and self.server_key_path.is_file():
            return
        # Agents pin the CA, not this certificate, so re-issuing it is always safe.
        cert_pem, key_pem = tls.create_server_certificate(
            self.ca_cert_path.read_bytes(),
            self.ca_key_path.read_bytes(),
            hostnames=_machine_hostnames(),
            ip_addresses=[],
        )
        write_file_atomically(self.server_key_path, key_pem, SECRET_MODE)
        write_file_atomically(self.server_cert_path, cert_pem, PUBLIC_MODE)

    def _remove_leftover_temp_files(self) -> None:
        for name in _INITIALISED_NAMES:
            for leftover in self.root.glob(temp_file_pattern(self.root / name)):
                with contextlib.suppress(OSError):
                    leftover.unlink()


def checked_database_url(url: str | None) -> str | None:
    """A database as ``--database`` names it: a PostgreSQL URL, or None for SQLite (None, ""
    or "sqlite"). Raises ValueError (one line) for anything else."""
    if url in (None, "", "sqlite"):
        return None
    if not url.startswith(POSTGRESQL_SCHEMES):
        raise ValueError(f"not a PostgreSQL URL: {url!r} (postgresql://USER@HOST:PORT/DB,"
                         " or 'sqlite')")
    return url


def _machine_hostnames() -> list[str]:
    names: list[str] = []
    hostname = socket.gethostname().strip()
    candidates = [hostname]
    if "." in hostname:
        candidates.append(hostname.split(".", 1)[0])
    for name in candidates:
        try:
            name.encode("idna")
        except UnicodeError:
            continue  # not expressible as a DNS name; localhost and the IPs still work
        if name and name not in names:
            names.append(name)
    return names


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: it exists
        return True
    return True


def _url_in(path: Path) -> str | None:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    url = document.get("url") if isinstance(document, dict) else None
    return url if isinstance(url, str) and url else None


def _make_private_folder(folder: Path) -> None:
    folder.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    # mkdir's mode is reduced by the umask and ignored for an existing folder; set it explicitly.
    if os.name == "posix" and (folder.stat().st_mode & 0o777) != FOLDER_MODE:
        folder.chmod(FOLDER_MODE)


def _make_private_file(path: Path) -> None:
    if os.name != "posix":
        return
    with contextlib.suppress(FileNotFoundError):
        if path.is_file() and (path.stat().st_mode & 0o777) != SECRET_MODE:
            path.chmod(SECRET_MODE)


@contextlib.contextmanager
def _exclusive_lock(lock_path: Path) -> Iterator[None]:
    descriptor = os.open(lock_path, os.O_RDWR | os.O_CREAT, SECRET_MODE)
    try:
        if os.name == "posix":
            import fcntl

            fcntl.flock(descriptor, fcntl.LOCK_EX)
        else:
            import msvcrt

            msvcrt.locking(descriptor, msvcrt.LK_LOCK, 1)
        yield
    finally:
        # Closing the descriptor releases the lock on both systems.
        os.close(descriptor)

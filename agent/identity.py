"""The agent's identity: an Ed25519 key pair kept in its state folder, and the client ID it implies.

The client ID is derived from the public key, so an agent proves who it is by signing the server's
nonce with the private key; no ID can be claimed without the key behind it. The ID is derived by
``protocol.client_id_for``, as the server derives it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from velotui.wire.identity import client_id_for

__all__ = ["AgentIdentity", "client_id_for"]

KEY_FILE_NAME = "agent.key"

_KEY_FILE_MODE = 0o600
_STATE_FOLDER_MODE = 0o700


class AgentIdentity:
    """An agent's private key, its public key and its client ID."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self.public_key_bytes: bytes = private_key.public_key().public_bytes(
            encoding=serialization.Encoding.Raw, format=serialization.PublicFormat.Raw
        )
        self.client_id: str = client_id_for(self.public_key_bytes)

    @classmethod
    def load_or_create(cls, state_dir: Path) -> AgentIdentity:
        """The identity kept in ``state_dir/agent.key``, made there first if there is none.

        The state folder is created (mode 0700) when missing; the key file is written with mode
        0600, atomically. Raises ValueError when the key file exists but is not an Ed25519
        private key (it is never replaced silently: that would change the agent's client ID), and
        OSError when the folder cannot be created or written.
        """
        state_dir = Path(state_dir)
        if not state_dir.is_dir():
            state_dir.mkdir(mode=_STATE_FOLDER_MODE, parents=True, exist_ok=True)
            # mkdir's mode is reduced by the umask; a folder we made should be ours alone.
            # An existing folder keeps its mode: it may be shared with the operator's own files.
            if os.name == "posix":
                state_dir.chmod(_STATE_FOLDER_MODE)
        key_path = state_dir / KEY_FILE_NAME
        if not key_path.exists():
            _publish_new_key(key_path)
        return cls(_load_private_key(key_path))

    def sign(self, nonce: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``nonce``, proving this agent holds its key."""
        return self._private_key.sign(nonce)

    def __repr__(self) -> str:
        return f"AgentIdentity({self.client_id})"


def _load_private_key(key_path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{key_path} is not a readable private key ({error}); move it aside to let the agent "
            "make a new identity, which the server will see as a new client"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{key_path} holds a {type(key).__name__}, not an Ed25519 private key")
    return key


def _publish_new_key(key_path: Path) -> None:
    key_pem = Ed25519PrivateKey.generate().private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    folder = key_path.parent
    # mkstemp creates the file 0600 from the start, so the key is never readable by others.
    descriptor, temp_name = tempfile.mkstemp(dir=folder, prefix=f".{key_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "wb") as temp_file:
            if hasattr(os, "fchmod"):
                os.fchmod(temp_file.fileno(), _KEY_FILE_MODE)
            temp_file.write(key_pem)
            temp_file.flush()
            os.fsync(temp_file.fileno())
        try:
            # A hard link publishes the complete file and fails if another process got there
            # first; then both use the winner's key and the ID stays single.
            os.link(temp_name, key_path)
        except FileExistsError:
            pass
        except OSError:
            # File systems without hard links: a rename is still atomic, though not exclusive.
            os.replace(temp_name, key_path)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(temp_name)
    if os.name == "posix":
        # Make the new directory entry itself durable, so a power cut cannot lose the identity.
        folder_descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(folder_descriptor)
        finally:
            os.close(folder_descriptor)

"""Client IDs: derived from an agent's public key, the same way on both sides of the wire."""

from __future__ import annotations

import hashlib
import re

PUBLIC_KEY_LENGTH = 32
CLIENT_ID_PREFIX = "C."
CLIENT_ID_HEX_LENGTH = 16
CLIENT_ID_PATTERN = re.compile(r"C\.[0-9a-f]{16}")
"""What every client ID looks like (use ``fullmatch``)."""


def client_id_for(public_key_bytes: bytes) -> str:
    """The client ID for a raw 32-byte Ed25519 public key: ``C.`` and 16 hex digits of its
    SHA-256. Part of the contract: agent and server derive it here alike.

    Raises ValueError when the key is not 32 bytes.
    """
    if not isinstance(public_key_bytes, bytes) or len(public_key_bytes) != PUBLIC_KEY_LENGTH:
        raise ValueError("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(public_key_bytes).hexdigest()
    return CLIENT_ID_PREFIX + digest[:CLIENT_ID_HEX_LENGTH]

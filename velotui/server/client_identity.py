"""The server's side of agent identity: client IDs, nonces, and the checks an agent must pass.

Everything here treats its input as hostile: the bytes come straight off an agent's connection.
``client_id_for`` must derive exactly what ``agent.identity.client_id_for`` derives; it is copied
rather than imported because the agent package must not depend on the server (a test keeps the
two in step).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PUBLIC_KEY_LENGTH = 32
SIGNATURE_LENGTH = 64
NONCE_LENGTH = 32
CLIENT_ID_PREFIX = "C."
CLIENT_ID_HEX_LENGTH = 16
CLIENT_ID_PATTERN = re.compile(r"C\.[0-9a-f]{16}")
"""What every client ID looks like (use ``fullmatch``)."""


def client_id_for(public_key_bytes: bytes) -> str:
    """The client ID for a raw 32-byte Ed25519 public key: ``C.`` and 16 hex digits of its SHA-256.

    Raises ValueError when the key is not 32 bytes.
    """
    if not isinstance(public_key_bytes, bytes) or len(public_key_bytes) != PUBLIC_KEY_LENGTH:
        raise ValueError("an Ed25519 public key is 32 bytes")
    digest = hashlib.sha256(public_key_bytes).hexdigest()
    return CLIENT_ID_PREFIX + digest[:CLIENT_ID_HEX_LENGTH]


def verify_signature(public_key_bytes: bytes, nonce: bytes, signature: bytes) -> bool:
    """True when ``signature`` is the Ed25519 signature of ``nonce`` by that public key.

    False for anything else, including a key, nonce or signature of the wrong type or length;
    never raises.
    """
    if not (
        isinstance(public_key_bytes, bytes)
        and isinstance(nonce, bytes)
        and isinstance(signature, bytes)
        and len(public_key_bytes) == PUBLIC_KEY_LENGTH
        and len(signature) == SIGNATURE_LENGTH
    ):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key_bytes).verify(signature, nonce)
    except (InvalidSignature, ValueError):
        return False
    return True


def new_nonce() -> bytes:
    """32 fresh random bytes for an agent to sign, so an old signature cannot be replayed."""
    return secrets.token_bytes(NONCE_LENGTH)


def secrets_equal(a: str, b: str) -> bool:
    """Whether two secrets are equal, in time that does not depend on where they differ.

    False when either is not a string; never raises.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    # compare_digest accepts only ASCII str, so compare the UTF-8 bytes instead.
    return hmac.compare_digest(
        a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
    )

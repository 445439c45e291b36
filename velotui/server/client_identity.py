"""The server's side of agent identity: client IDs, nonces, and the checks an agent must pass.

Everything here treats its input as hostile: the bytes come straight off an agent's connection.
Client IDs are derived by ``velotui.wire.identity.client_id_for``, which the agent uses too.
"""

from __future__ import annotations

import hmac
import secrets

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from velotui.wire.identity import CLIENT_ID_PATTERN, PUBLIC_KEY_LENGTH, client_id_for

__all__ = ["CLIENT_ID_PATTERN", "client_id_for", "new_nonce", "secrets_equal",
           "verify_signature"]

SIGNATURE_LENGTH = 64
NONCE_LENGTH = 32


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

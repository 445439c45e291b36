"""Identifiers the server hands out: flows ``F.…`` and hunts ``H.…``, sortable by creation time."""

from __future__ import annotations

import re
import secrets
import time

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: sorts like the number
FLOW_ID = re.compile(r"F\.[0-9A-Z]{8,26}(\.[HC](\.[0-9]{1,6})?)?")
HUNT_ID = re.compile(r"H\.[0-9A-Z]{8,26}")


def _sortable(length: int = 13) -> str:
    """Milliseconds since 1970 then random bits, in base32: later IDs sort after earlier ones."""
    value = (time.time_ns() // 1_000_000) << 20 | secrets.randbits(20)
    digits = []
    for _ in range(length):
        value, digit = divmod(value, 32)
        digits.append(_ALPHABET[digit])
    return "".join(reversed(digits))


def new_flow_id() -> str:
    return "F." + _sortable()


def new_hunt_id() -> str:
    return "H." + _sortable()


def hunt_flow_id(hunt_id: str, attempt: int = 1) -> str:
    """The collection of a hunt on a client: ``F.<hunt>.H``, ``F.<hunt>.H.2`` when relaunched."""
    base = f"F.{hunt_id[2:]}.H"
    return base if attempt <= 1 else f"{base}.{attempt}"


def condition_flow_id(hunt_id: str, attempt: int = 1) -> str:
    """The CheckHuntCondition flow of a hunt on a client: ``F.<hunt>.C`` (``.C.2`` when the
    check is run again after it failed)."""
    base = f"F.{hunt_id[2:]}.C"
    return base if attempt <= 1 else f"{base}.{attempt}"


def is_flow_id(text: str) -> bool:
    return FLOW_ID.fullmatch(text) is not None

"""Operator roles, and the role each operator API method needs.

Roles are ordered: each can do what the ones before it can. ``reader`` reads hunts, clients,
results and the audit; ``analyst`` also exports and queries hunts' results; ``hunter`` also
creates, copies, edits and stops hunts, labels clients and runs collections; ``approver`` also
approves others' hunts; ``admin`` does everything, operators and settings included.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

ROLES = ("reader", "analyst", "hunter", "approver", "admin")

F = TypeVar("F", bound=Callable[..., Any])


def requires(role: str) -> Callable[[F], F]:
    """Mark an operator API method with the least role that may call it."""
    if role not in ROLES:
        raise ValueError(f"no role {role!r}")

    def mark(method: F) -> F:
        method.required_role = role  # type: ignore[attr-defined]
        return method

    return mark


def allows(role: str, needed: str) -> bool:
    """Whether an operator with ``role`` may do what needs ``needed``."""
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def required_role(method: Callable[..., Any]) -> str | None:
    """The role a method was marked with (None: not marked, which the API refuses to serve)."""
    return getattr(method, "required_role", None)

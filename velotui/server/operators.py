"""Operators: the named people who use the operator API, each with a role and a token.

A token is ``secrets.token_urlsafe(32)``, shown once; the server keeps only its SHA-256. The
first start (no operator yet) makes an ``admin`` operator whose token is the datastore's
``api_token`` file, so that file works as it always has. A connection is bound to the hash of
the token it showed, and every request looks that hash up again: a removed operator's next
request is refused and a changed role applies to the next request.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from dataclasses import dataclass

from velotui.server.data.database import Database
from velotui.server.data.operators import LastAdmin, OperatorExists, OperatorRecord
from velotui.server.errors import ServiceError
from velotui.server.roles import ROLES

FIRST_ADMIN = "admin"
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")


@dataclass(frozen=True)
class Operator:
    """Who a request acts as: ``name`` (what the audit log records) and ``role``."""

    name: str
    role: str


def new_token() -> str:
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The SHA-256 (hex) of a token: all the server stores of it."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ServiceError(f"operator name {name!r}: use 1-64 letters, digits, '.', '_', '@'"
                           " or '-', starting with a letter or digit")
    return name


def check_role(role: object) -> str:
    if role not in ROLES:
        raise ServiceError(f"role {role!r}: one of {', '.join(ROLES)}")
    return str(role)


class OperatorDirectory:
    """The operators, cached from the ``operators`` table (which only this changes)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._by_name: dict[str, OperatorRecord] = {}
        self._by_hash: dict[str, str] = {}
        self._session_hashes: dict[str, str] = {}  # tokens for one run, by hash: operator name

    async def load(self, first_token: str) -> None:
        """Read the operators; with none, make the first admin, whose token is
        ``first_token`` (the datastore's api_token)."""
        first = OperatorRecord(FIRST_ADMIN, "admin", token_hash(first_token), time.time(),
                               "first start")
        await self.db.operators.add(first, None, only_if_none=True)
        await self._reload()

    async def _reload(self) -> None:
        records = await self.db.operators.load()
        self._by_name = {record.name: record for record in records}
        self._by_hash = {record.token_hash: record.name for record in records}

    def all(self) -> list[OperatorRecord]:
        return sorted(self._by_name.values(), key=lambda record: record.name)

    def get(self, name: str) -> Operator | None:
        record = self._by_name.get(name)
        return None if record is None else Operator(record.name, record.role)

    def by_hash(self, hashed: str) -> Operator | None:
        """The operator a connection's token (by its hash) stands for now, or None."""
        name = self._by_hash.get(hashed) or self._session_hashes.get(hashed)
        return None if name is None else self.get(name)

    def by_token(self, token: str) -> Operator | None:
        return self.by_hash(token_hash(token)) if token else None

    def add_session_token(self, token: str, name: str) -> None:
        """Also accept ``token`` as operator ``name`` until the server stops (the embedded
        console's own token; it stops working if that operator is removed)."""
        self._session_hashes[token_hash(token)] = name

    async def add(self, name: str, role: str, creator: str) -> str:
        """Make an operator; returns its token (the only time it is seen)."""
        name, role = check_name(name), check_role(role)
        if name in self._by_name:
            raise ServiceError(f"there is already an operator {name!r}")
        token = new_token()
        try:
            await self.db.operators.add(
                OperatorRecord(name, role, token_hash(token), time.time(), creator), creator)
        except OperatorExists:
            raise ServiceError(f"there is already an operator {name!r}") from None
        await self._reload()
        return token

    async def remove(self, name: str, actor: str) -> None:
        name = check_name(name)
        try:
            removed = await self.db.operators.remove(name, actor, time.time())
        except LastAdmin:
            raise ServiceError(f"{name} is the last admin; make another admin first") from None
        if not removed:
            raise ServiceError(f"no operator {name!r} (see: velotui operator list)")
        await self._reload()

    async def set_role(self, name: str, role: str, actor: str) -> str:
        """Change an operator's role; returns the old one."""
        name, role = check_name(name), check_role(role)
        try:
            old = await self.db.operators.set_role(name, role, actor, time.time())
        except LastAdmin:
            raise ServiceError(f"{name} is the last admin; make another admin first") from None
        if old is None:
            raise ServiceError(f"no operator {name!r} (see: velotui operator list)")
        await self._reload()
        return old

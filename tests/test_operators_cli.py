"""``velotui operator`` end to end: real ``velotui serve`` and ``velotui`` processes over the
real operator websocket. The admin (the datastore's api_token) adds an operator whose token goes
to a 0600 file, that operator works within its role and is refused beyond it in one line, a role
change applies at once, and removing it shuts its token out."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.processes import ServerProcess, velotui
from velotui.server.datastore import Datastore


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[ServerProcess]:
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    try:
        yield server
    finally:
        server.stop()


def run(server: ServerProcess, *args: str, token: Path | None = None):
    options = ["--datastore", str(server.datastore)]
    if token is not None:
        options += ["--token-file", str(token)]
    return velotui(*args, *options)


def test_operator_commands_end_to_end(serve: ServerProcess, tmp_path: Path) -> None:
    token_file = tmp_path / "alice.token"
    added = run(serve, "operator", "add", "alice", "--role", "reader", "-o", str(token_file))
    assert added.returncode == 0, added.stderr
    assert added.stdout == f"added alice (reader); token written to {token_file}\n"
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    token = token_file.read_text().strip()
    assert len(token) >= 43 and token not in added.stdout + added.stderr

    # A second -o to an existing file is refused before anything is made.
    again = run(serve, "operator", "add", "bob", "--role", "hunter", "-o", str(token_file))
    assert again.returncode == 1 and "exists already" in again.stderr
    assert token_file.read_text().strip() == token

    # Without -o the token is shown once, on standard output alone.
    shown = run(serve, "operator", "add", "bob", "--role", "hunter")
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == "added bob (hunter); its token, shown this once:\n"
    assert len(shown.stdout.strip()) >= 43

    listed = run(serve, "operator", "list", "--json")
    assert [(o["name"], o["role"], o["creator"]) for o in map(
        json.loads, listed.stdout.splitlines())] == [
        ("admin", "admin", "first start"), ("alice", "reader", "admin"),
        ("bob", "hunter", "admin")]

    assert run(serve, "hunt", "list", token=token_file).returncode == 0
    refused = run(serve, "hunt", "create", "--query", "SELECT * FROM info()", token=token_file)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith("create_hunt needs the hunter role; alice is reader")
    assert len(refused.stderr.strip().splitlines()) == 1
    refused = run(serve, "operator", "list", token=token_file)
    assert refused.returncode == 1
    assert "list_operators needs the admin role; alice is reader" in refused.stderr

    changed = run(serve, "operator", "role", "alice", "hunter")
    assert (changed.returncode, changed.stdout) == (0, "alice: reader -> hunter\n")
    created = run(serve, "hunt", "create", "--query", "SELECT * FROM info()", "--json",
                  token=token_file)
    assert created.returncode == 0, created.stderr
    assert json.loads(created.stdout)["creator"] == "alice"

    removed = run(serve, "operator", "remove", "alice")
    assert (removed.returncode, removed.stdout) == (0, "removed alice\n")
    shut_out = run(serve, "hunt", "list", token=token_file)
    assert shut_out.returncode == 1 and shut_out.stderr.count("\n") == 1

    last = run(serve, "operator", "remove", "admin")
    assert last.returncode == 1
    assert "admin is the last admin; make another admin first" in last.stderr
    audit = [json.loads(line) for line in run(serve, "audit", "--json").stdout.splitlines()]
    assert [(a["actor"], a["action"], a["target"], a["outcome"]) for a in audit
            if a["action"].startswith("operator")] == [
        ("admin", "operator_add", "alice", "allowed"), ("admin", "operator_add", "bob", "allowed"),
        ("admin", "operator_role", "alice", "allowed"),
        ("admin", "operator_remove", "alice", "allowed"),
        ("admin", "operator_remove", "admin", "refused")]  # the last admin stays

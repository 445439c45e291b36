"""The agent's client-side VQL plugins, functions and variables.

``client_registry()`` gives a registry with all of them over the engine's built-ins; flows on the
agent and ``velotui query`` run against it.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Any

from agent.plugins import (
    archives,
    client_info,
    connections,
    dns,
    execution,
    file_writes,
    files,
    globbing,
    hashing,
    http,
    info,
    network,
    parsers,
    process_tracker,
    processes,
    sqlite_files,
    temporary,
    upload,
    users,
    xml_documents,
    yara_scan,
)
from velotui.vql.engine import builtins_registry
from velotui.vql.registry import Registry

__all__ = ["client_registry", "register_client_plugins"]


def register_client_plugins(
    registry: Registry,
    *,
    labels: Iterable[str],
    facts: Mapping[str, Any] | None = None,
    prevent_execve: bool = False,
    client_id: str | None = None,
) -> Registry:
    """Add the client plugins, functions and the ``config`` variable to ``registry``; return it.

    ``facts`` are a simulated host's facts: info() reports them over the real machine's, and their
    ``Labels`` join ``labels`` in ``config``. ``prevent_execve`` (the agent config's) makes
    execve() refuse to run programs; ``client_id`` is what client_info() reports.
    """
    _register_plugins(registry)
    return _configure(registry, labels, facts, prevent_execve, client_id)


def _register_plugins(registry: Registry) -> None:
    info.register(registry)
    processes.register(registry)
    globbing.register(registry)
    files.register(registry)
    hashing.register(registry)
    users.register(registry)
    network.register(registry)
    upload.register(registry)
    parsers.register(registry)
    temporary.register(registry)
    sqlite_files.register(registry)
    archives.register(registry)
    execution.register(registry)
    connections.register(registry)
    client_info.register(registry)
    yara_scan.register(registry)
    process_tracker.register(registry)
    http.register(registry)
    file_writes.register(registry)
    dns.register(registry)
    xml_documents.register(registry)


def _configure(registry: Registry, labels: Iterable[str], facts: Mapping[str, Any] | None,
               prevent_execve: bool = False, client_id: str | None = None) -> Registry:
    all_labels = list(labels)
    fact_labels = facts.get("Labels") if facts else None
    if isinstance(fact_labels, list):
        all_labels.extend(label for label in fact_labels if isinstance(label, str))
    all_labels = list(dict.fromkeys(all_labels))
    # Velociraptor queries read the labels as config.Client_labels; hunt conditions here also
    # use config.Labels. Both name one list.
    registry.set_variable("config", {"Client_labels": all_labels, "Labels": all_labels})
    if facts:
        registry.set_setting(info.FACTS_SETTING, dict(facts))
    if prevent_execve:
        registry.set_setting(execution.PREVENT_EXECVE_SETTING, True)
    if client_id:
        registry.set_setting(client_info.CLIENT_ID_SETTING, client_id)
    return registry


@functools.cache
def _shared_plugins() -> Registry:
    """The client plugins over the built-ins, once per process: every agent's registry is a
    child adding only its labels and facts, so a simulated fleet compiles each query once."""
    registry = builtins_registry().child()
    _register_plugins(registry)
    return registry


def client_registry(
    *,
    labels: Iterable[str] = (),
    facts: Mapping[str, Any] | None = None,
    base: Registry | None = None,
    prevent_execve: bool = False,
    client_id: str | None = None,
) -> Registry:
    """A new registry holding the client plugins, the agent's ``config`` and (for a simulated
    host) its facts; over ``base`` when given (then the plugins are added to a child of it),
    else over one process-wide registry of the plugins. ``base`` itself is not changed.
    ``prevent_execve`` makes execve() refuse to run programs; ``client_id`` is what
    client_info() reports."""
    if base is not None:
        return register_client_plugins(base.child(), labels=labels, facts=facts,
                                       prevent_execve=prevent_execve, client_id=client_id)
    return _configure(_shared_plugins().child(), labels, facts, prevent_execve, client_id)

"""The agent's client-side VQL plugins, functions and variables.

``client_registry()`` gives a registry with all of them over the engine's built-ins; flows on the
agent and ``velotui query`` run against it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from agent.plugins import (
    files,
    globbing,
    hashing,
    info,
    network,
    processes,
    upload,
    users,
)
from velotui.vql.engine import builtins_registry
from velotui.vql.registry import Registry

__all__ = ["client_registry", "register_client_plugins"]


def register_client_plugins(
    registry: Registry, *, labels: Iterable[str], facts: Mapping[str, Any] | None = None
) -> Registry:
    """Add the client plugins, functions and the ``config`` variable to ``registry``; return it.

    ``facts`` are a simulated host's facts: info() reports them over the real machine's, and their
    ``Labels`` join ``labels`` in ``config``.
    """
    all_labels = list(labels)
    fact_labels = facts.get("Labels") if facts else None
    if isinstance(fact_labels, list):
        all_labels.extend(label for label in fact_labels if isinstance(label, str))
    all_labels = list(dict.fromkeys(all_labels))
    # Velociraptor queries read the labels as config.Client_labels; hunt conditions here also
    # use config.Labels. Both name one list.
    registry.set_variable("config", {"Client_labels": all_labels, "Labels": all_labels})

    info.register(registry, facts=facts)
    processes.register(registry)
    globbing.register(registry)
    files.register(registry)
    hashing.register(registry)
    users.register(registry)
    network.register(registry)
    upload.register(registry)
    return registry


def client_registry(
    *,
    labels: Iterable[str] = (),
    facts: Mapping[str, Any] | None = None,
    base: Registry | None = None,
) -> Registry:
    """A new registry over ``base`` (the engine's built-ins by default) holding the client
    plugins; ``base`` itself is not changed."""
    parent = base if base is not None else builtins_registry()
    return register_client_plugins(parent.child(), labels=labels, facts=facts)

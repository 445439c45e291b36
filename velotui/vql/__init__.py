"""The VQL engine: parse, compile and run Velociraptor's query language.

Imports nothing from the server, the console or the network, so the agent uses it too.
"""

from velotui.vql.engine import (
    Program,
    builtins_registry,
    collect,
    compile_query,
    default_registry,
    new_scope,
    run,
    run_sync,
)
from velotui.vql.parser import VQLSyntaxError, check, parse, tokenize
from velotui.vql.registry import Registry
from velotui.vql.scope import DeadlineExceeded, QueryContext, Scope, UnknownName
from velotui.vql.values import to_json_value

__all__ = [
    "DeadlineExceeded",
    "Program",
    "QueryContext",
    "Registry",
    "Scope",
    "UnknownName",
    "VQLSyntaxError",
    "builtins_registry",
    "check",
    "collect",
    "compile_query",
    "default_registry",
    "new_scope",
    "parse",
    "run",
    "run_sync",
    "to_json_value",
    "tokenize",
]

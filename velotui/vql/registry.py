"""The registry: the functions, plugins and variables a query can reach.

The engine's built-ins live in one registry; the agent and the server each add theirs in a child
registry without touching the engine (``builtins_registry().child()``).

Implementations are plain Python callables. Every one receives the calling ``Scope`` first and
its VQL arguments as keyword arguments; a parameter named ``else_`` is the VQL argument ``else``
(a trailing underscore lets a Python keyword be an argument name). Parameters without a default
are required. A ``**kwargs`` parameter accepts any argument, in call order (``dict()``).

- A *function* returns one value; it may be ``async def``.
- An *aggregate* function also receives ``state``, a dict kept per call site (and per GROUP BY
  bin), as its second positional argument.
- A *plugin* is an async generator function that yields rows (dicts).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Parameter:
    """One named VQL argument of a function or plugin."""

    name: str
    python_name: str
    required: bool


@dataclass(frozen=True)
class Callee:
    """A registered function or plugin."""

    name: str
    impl: Callable[..., Any]
    kind: str  # "function", "aggregate" or "plugin"
    parameters: dict[str, Parameter]
    accepts_any: bool
    is_async: bool
    doc: str

    @property
    def is_aggregate(self) -> bool:
        return self.kind == "aggregate"

    def check_arguments(self, names: list[str]) -> str | None:
        """Return a message naming the first wrong argument, or None when the names fit."""
        if not self.accepts_any:
            for name in names:
                if name not in self.parameters:
                    known = ", ".join(self.parameters) or "none"
                    return f"{self.name}(): unexpected argument '{name}' (accepts: {known})"
        for parameter in self.parameters.values():
            if parameter.required and parameter.name not in names:
                return f"{self.name}(): missing required argument '{parameter.name}'"
        return None

    def python_kwargs(self, args: dict[str, Any]) -> dict[str, Any]:
        """Map VQL argument names onto the implementation's parameter names."""
        if all(self.parameters.get(k) is None or self.parameters[k].python_name == k for k in args):
            return args
        return {
            (self.parameters[k].python_name if k in self.parameters else k): v
            for k, v in args.items()
        }

    def signature(self) -> str:
        """The call as an operator would write it, for help and completion."""
        parts = [p.name if p.required else f"{p.name}=" for p in self.parameters.values()]
        if self.accepts_any:
            parts.append("...")
        return f"{self.name}({', '.join(parts)})"


def _describe(impl: Callable[..., Any], name: str, kind: str) -> Callee:
    signature = inspect.signature(impl)
    positional_to_skip = 2 if kind == "aggregate" else 1
    parameters: dict[str, Parameter] = {}
    accepts_any = False
    for index, param in enumerate(signature.parameters.values()):
        if index < positional_to_skip:
            continue
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            accepts_any = True
            continue
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        vql_name = param.name[:-1] if param.name.endswith("_") else param.name
        parameters[vql_name] = Parameter(
            name=vql_name,
            python_name=param.name,
            required=param.default is inspect.Parameter.empty,
        )
    if kind == "plugin" and not inspect.isasyncgenfunction(impl):
        raise TypeError(f"plugin {name}() must be an async generator function")
    return Callee(
        name=name,
        impl=impl,
        kind=kind,
        parameters=parameters,
        accepts_any=accepts_any,
        is_async=inspect.iscoroutinefunction(impl),
        doc=inspect.cleandoc(impl.__doc__ or ""),
    )


@dataclass(eq=False)
class Registry:
    """Functions, plugins and variables, layered over an optional parent registry."""

    parent: Registry | None = None
    _functions: dict[str, Callee] = field(default_factory=dict)
    _plugins: dict[str, Callee] = field(default_factory=dict)
    _variables: dict[str, Any] = field(default_factory=dict)
    # Values the host hands its implementations (a simulated host's facts), invisible to VQL.
    _settings: dict[str, Any] = field(default_factory=dict)
    # Programs compiled against this registry (see engine.compile_query); cleared when it changes.
    program_cache: dict[str, Any] = field(default_factory=dict, repr=False)

    def child(self) -> Registry:
        """A new registry that sees everything here and can add or override without changing it."""
        return Registry(parent=self)

    def only(self, names: Iterable[str]) -> Registry:
        """A new registry with no parent holding just the functions and plugins here (or in a
        parent) called ``names``, and the same variables: a query run with it reaches nothing
        else, and a call to anything else is an unknown function or plugin."""
        kept = set(names)
        restricted = Registry(_variables=self.variables())
        restricted._functions = {c.name: c for c in self.functions() if c.name in kept}
        restricted._plugins = {c.name: c for c in self.plugins() if c.name in kept}
        return restricted

    # Registration -------------------------------------------------------------------------------

    def function(
        self,
        impl: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        aggregate: bool = False,
    ) -> Any:
        """Register a function; usable bare (``@reg.function``) or with options."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            vql_name = name or fn.__name__.rstrip("_")
            kind = "aggregate" if aggregate else "function"
            self._functions[vql_name] = _describe(fn, vql_name, kind)
            self.program_cache.clear()
            return fn

        return register(impl) if impl is not None else register

    def plugin(self, impl: Callable[..., Any] | None = None, *, name: str | None = None) -> Any:
        """Register a plugin (an async generator function yielding rows)."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            vql_name = name or fn.__name__.rstrip("_")
            self._plugins[vql_name] = _describe(fn, vql_name, "plugin")
            self.program_cache.clear()
            return fn

        return register(impl) if impl is not None else register

    def set_variable(self, name: str, value: Any) -> None:
        """Make a global variable visible to every query run with this registry."""
        self._variables[name] = value

    def set_setting(self, name: str, value: Any) -> None:
        """Hand implementations a value (read with ``setting``) that queries cannot see."""
        self._settings[name] = value

    def setting(self, name: str, default: Any = None) -> Any:
        """A value set with ``set_setting`` here or in a parent registry."""
        registry: Registry | None = self
        while registry is not None:
            if name in registry._settings:
                return registry._settings[name]
            registry = registry.parent
        return default

    def compiles_like_parent(self) -> bool:
        """True when this registry adds no function or plugin, so a query compiles exactly as
        in its parent (variables and settings are looked up when a query runs)."""
        return self.parent is not None and not self._functions and not self._plugins

    # Lookup -------------------------------------------------------------------------------------

    def lookup_function(self, name: str) -> Callee | None:
        registry: Registry | None = self
        while registry is not None:
            found = registry._functions.get(name)
            if found is not None:
                return found
            registry = registry.parent
        return None

    def lookup_plugin(self, name: str) -> Callee | None:
        registry: Registry | None = self
        while registry is not None:
            found = registry._plugins.get(name)
            if found is not None:
                return found
            registry = registry.parent
        return None

    def variables(self) -> dict[str, Any]:
        """All global variables, the nearest registry winning."""
        merged = self.parent.variables() if self.parent is not None else {}
        merged.update(self._variables)
        return merged

    def functions(self) -> Iterator[Callee]:
        yield from self._merged("_functions").values()

    def plugins(self) -> Iterator[Callee]:
        yield from self._merged("_plugins").values()

    def _merged(self, attribute: str) -> dict[str, Callee]:
        merged = self.parent._merged(attribute) if self.parent is not None else {}
        merged.update(getattr(self, attribute))
        return merged

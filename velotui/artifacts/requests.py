"""Which artifact each ``--param K=V`` of a command line is for.

A parameter applies to each named artifact that declares it; ``NAME.K=V`` applies to that
artifact only. One that no named artifact declares is refused, so a typo is never dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any


class RequestError(ValueError):
    """A name or a parameter that cannot be placed; the message says which."""


def resolve_name(known: Collection[str], name: str) -> str:
    """``name`` as the library spells it (exact, else the one name equal in any case)."""
    if name in known:
        return name
    folded = [k for k in known if k.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise RequestError(f"no artifact {name!r} (see: velotui artifacts list)")


def assign_parameters(declared: Mapping[str, Collection[str]], names: Sequence[str],
                      pairs: Sequence[str]) -> list[tuple[str, dict[str, str]]]:
    """``(artifact name, {parameter: value})`` for each of ``names``, in order; ``declared``
    maps every known artifact to the parameters it declares."""
    chosen = list(dict.fromkeys(resolve_name(declared, name) for name in names))
    given: dict[str, dict[str, str]] = {name: {} for name in chosen}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RequestError(f"--param {pair!r}: expected NAME=VALUE")
        owner, dot, short = key.rpartition(".")
        if dot and owner in given:
            if short not in declared[owner]:
                raise RequestError(f"--param {pair!r}: {owner} has no parameter {short!r}")
            given[owner][short] = value
            continue
        takers = [name for name in chosen if key in declared[name]]
        if not takers:
            raise RequestError(f"--param {pair!r}: no artifact named here declares {key!r}")
        for taker in takers:
            given[taker][key] = value
    return [(name, given[name]) for name in chosen]


def requests_for(summaries: Mapping[str, Mapping[str, Any]], names: Sequence[str],
                 pairs: Sequence[str]) -> list[dict[str, Any]]:
    """The operator API's ``artifacts`` argument from artifact summaries (``summary()``)."""
    declared = {name: {p["name"] for p in summary.get("parameters", [])}
                for name, summary in summaries.items()}
    return [{"name": name, "parameters": values}
            for name, values in assign_parameters(declared, names, pairs)]

"""``source()``: the rows of one source of an artifact, read from inside the collection.

In Velociraptor ``source()`` reads results already stored on the server (a flow's, a hunt's,
a notebook's). A query on an endpoint has no such store, so here it runs the source again,
through the stored query ```Artifact.<Name>``` that a compiled collection defines: by default
the artifact whose source is running (the ``_ArtifactName`` variable its scope carries), with
the parameter values they have where ``source()`` is called. The arguments that name stored
results (``client_id``, ``flow_id``, ``hunt_id``, notebooks, ``orgs``) are refused, saying why.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from velotui.vql.registry import Registry
from velotui.vql.scope import MISSING, Scope

ARTIFACT_VARIABLE = "_ArtifactName"


def register(registry: Registry) -> None:
    registry.plugin(source)


async def source(
    scope: Scope, *, artifact: Any = "", source: Any = "", client_id: Any = None,
    flow_id: Any = None, hunt_id: Any = None, start_time: Any = None, end_time: Any = None,
    notebook_id: Any = None, notebook_cell_id: Any = None, notebook_cell_version: Any = None,
    notebook_cell_table: Any = None, start_row: Any = 0, count: Any = None, orgs: Any = None,
) -> AsyncIterator[Any]:
    """Rows of ``source`` of ``artifact`` (default: the running artifact), run again here;
    ``start_row`` and ``count`` page them. Stored results are not reachable from a query."""
    stored = {"client_id": client_id, "flow_id": flow_id, "hunt_id": hunt_id,
              "notebook_id": notebook_id, "notebook_cell_id": notebook_cell_id,
              "notebook_cell_version": notebook_cell_version,
              "notebook_cell_table": notebook_cell_table, "orgs": orgs}
    named = [name for name, value in stored.items() if value not in (None, "")]
    if named:
        scope.error(f"source(): {', '.join(named)}: results stored on the server cannot be "
                    "read from a collection; source() here runs the artifact's source again")
        return
    name = artifact or scope.lookup(ARTIFACT_VARIABLE)
    if not isinstance(name, str) or not name:
        scope.error("source(): no artifact is running here; name one with artifact=")
        return
    query = scope.lookup(f"Artifact.{name}")
    if query is MISSING or not hasattr(query, "rows"):
        scope.error(f"source(): artifact {name} is not part of this collection")
        return
    args: dict[str, Any] = {}
    for parameter in getattr(query, "parameters", None) or []:
        value = scope.lookup(parameter.name)
        if parameter.name != "source" and value is not MISSING:
            args[parameter.name] = value
    args["source"] = source if isinstance(source, str) else ""
    skip = start_row if isinstance(start_row, int) and start_row > 0 else 0
    left = count if isinstance(count, int) and count >= 0 else None
    async with contextlib.aclosing(query.rows(scope, args)) as rows:
        async for row in rows:
            if skip:
                skip -= 1
                continue
            if left is not None:
                if left == 0:
                    break
                left -= 1
            yield row

"""A datastore holding hunts with real stored rows, for tests of triage (pages, tallies,
queries) and of the command line's output: made through the data layer's own ingest statements
(DataBuilder), as the server would have stored them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tests.data_builder import DataBuilder
from velotui.server.data import Database
from velotui.server.datastore import Datastore
from velotui.server.ids import hunt_flow_id
from velotui.server.upload_store import FolderUploads

HUNT = "H.0000000000TRI"
ARTIFACT_HUNT = "H.0000000000ART"
EMPTY_HUNT = "H.0000000000EMP"
CLIENTS = {  # client ID: (hostname, rows it returned)
    "C.00000000000000a1": ("web-1", 1500),
    "C.00000000000000b2": ("web-2", 1000),
    "C.00000000000000c3": ("db-1", 500),
}
TOTAL_ROWS = sum(rows for _host, rows in CLIENTS.values())
BATCH = 100
FLOW_ID = hunt_flow_id(HUNT)  # a hunt's collections share the flow ID of their attempt
LONG_DESCRIPTION = "processes running on every web and database server of the estate, " * 3


def stored_row(client_index: int, index: int) -> dict[str, Any]:
    """The rows client ``client_index`` returned: the third client's rows have one more
    column, and a nested value."""
    row: dict[str, Any] = {"Index": index, "Name": f"proc-{index % 7}",
                           "User": "root" if index % 10 == 0 else "alice"}
    if client_index == 2:
        row["Extra"] = {"pid": index}
    return row


def expected_rows() -> list[dict[str, Any]]:
    """Every stored row of HUNT as the operator sees it, in stored order."""
    rows = []
    for client_index, (client_id, (hostname, count)) in enumerate(CLIENTS.items()):
        for index in range(count):
            rows.append({"ClientId": client_id, "Fqdn": f"{hostname}.corp.example",
                         "FlowId": FLOW_ID, **stored_row(client_index, index)})
    return rows


async def build_datastore(root: Path, database_url: str | None = None) -> Datastore:
    """A datastore holding the triage hunts (its database at ``database_url``, when given)."""
    datastore = Datastore.open(root)
    if database_url is not None:
        datastore.set_database_url(database_url)
    db = await Database.open(datastore.database_target())
    build = DataBuilder(db, FolderUploads(datastore.uploads_location()))
    now = time.time()
    for client_id, (hostname, _rows) in CLIENTS.items():
        await build.client(client_id, {"Hostname": hostname, "Fqdn": f"{hostname}.corp.example",
                                       "OS": "linux"}, first_seen=now - 100, last_seen=now - 50,
                           agent_labels=["prod"] if hostname == "web-1" else [])
    await build.hunt(HUNT, "SELECT * FROM pslist()", created=now - 40, started=now - 40,
                     description=LONG_DESCRIPTION.strip(), expires=now + 86400)
    for client_index, (client_id, (_host, count)) in enumerate(CLIENTS.items()):
        await build.check(HUNT, client_id, matched=True, at=now - 30 + client_index)
        rows = [stored_row(client_index, index) for index in range(count)]
        await build.collect(
            HUNT, client_id, created=now - 20, started=now - 19, finished=now - 10,
            batches=[rows[i:i + BATCH] for i in range(0, count, BATCH)])
    # An artifact hunt: rows tagged with their source, as compiled artifacts tag them.
    await build.hunt(ARTIFACT_HUNT, "SELECT 1", created=now - 39, started=now - 39,
                     description="artifacts", expires=now + 86400)
    client_id = next(iter(CLIENTS))
    await build.check(ARTIFACT_HUNT, client_id, matched=True, at=now - 30)
    await build.collect(ARTIFACT_HUNT, client_id, created=now - 20, started=now - 19,
                        finished=now - 10, batches=[[
                            {"Name": "a", "_Source": "Linux.Sys.Users"},
                            {"Name": "b", "_Source": "Linux.Sys.Users"},
                            {"Name": "c", "_Source": "Generic.Client.Info/BasicInformation"},
                            {"Name": "d", "_Source": "Generic.Client.Info/Users"},
                        ]])
    await build.hunt(EMPTY_HUNT, "SELECT 1", created=now - 38, started=None,
                     description="nothing yet", expires=now + 86400)
    await db.close()
    return datastore

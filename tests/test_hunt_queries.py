"""Triage of a hunt's stored results on the server: filtered and drilled-down pages, tallies,
pages of a hunt's clients, and VQL over stored data (``query_hunt``), in process and through the
operator API on a real websocket. The rows are stored through the data layer's own ingest
statements (DataBuilder), then a real server opens the datastore."""

from __future__ import annotations

import time
from array import array
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.data_builder import DataBuilder
from tests.triage_data import (
    ARTIFACT_HUNT,
    CLIENTS,
    EMPTY_HUNT,
    FLOW_ID,
    HUNT,
    TOTAL_ROWS,
    build_datastore,
    expected_rows,
)
from velotui.server.data import Database
from velotui.server.data.results import BATCHES_PER_READ, BYTES_PER_READ, HuntMember
from velotui.server.hunt_rows import MatchCache, MatchIndex, RowFilter, filtered_page
from velotui.server.remote import RemoteError, RemoteService
from velotui.server.result_queries import QueryRefused, StoredData, run_query
from velotui.server.server import Server
from velotui.server.service import Service, ServiceError

pytestmark = pytest.mark.both_backends


@dataclass
class Running:
    server: Server
    service: Service
    remote: RemoteService


@pytest.fixture
async def running(tmp_path: Path, database_url: str | None) -> AsyncIterator[Running]:
    datastore = await build_datastore(tmp_path / "datastore", database_url)
    server = Server(datastore, "127.0.0.1:0")
    await server.start()
    remote = await RemoteService.connect(server.url, datastore.api_token(), datastore.ca_pem())
    try:
        yield Running(server, server.service("analyst"), remote)
    finally:
        await remote.close()
        await server.stop()


async def every_page(service: Any, limit: int, **options: Any) -> tuple[list[dict], list[int]]:
    """Every row, page by page; and the total each page reported."""
    rows: list[dict[str, Any]] = []
    totals = []
    while True:
        page = await service.hunt_results_page(hunt_id=HUNT, offset=len(rows), limit=limit,
                                               **options)
        assert page["offset"] == len(rows)
        totals.append(page["total"])
        rows += page["rows"]
        if not page["rows"]:
            return rows, totals


# Pages of results -------------------------------------------------------------------------------


async def test_unfiltered_pages_are_every_row_in_stored_order(running: Running) -> None:
    rows, totals = await every_page(running.service, 700)
    assert rows == expected_rows()
    assert set(totals) == {TOTAL_ROWS}


async def test_a_filter_pages_through_the_matching_rows_of_every_client(running: Running
                                                                        ) -> None:
    wanted = [row for row in expected_rows() if row["Name"] == "proc-3"]
    assert len(wanted) > 400 and len({row["ClientId"] for row in wanted}) == 3
    rows, totals = await every_page(running.service, 97, filter="PROC-3")  # any case
    assert rows == wanted
    assert set(totals) == {len(wanted)}


async def test_a_filter_matches_the_added_columns_and_nested_values_as_their_text(
    running: Running
) -> None:
    service = running.service
    by_client = await service.hunt_results_page(hunt_id=HUNT, filter="00000000b2", limit=5)
    assert by_client["total"] == 1000
    assert {row["ClientId"] for row in by_client["rows"]} == {"C.00000000000000b2"}
    by_fqdn = await service.hunt_results_page(hunt_id=HUNT, filter="DB-1.corp", limit=5)
    assert by_fqdn["total"] == 500
    # A hunt's flows share its flow ID (one per attempt).
    by_flow = await service.hunt_results_page(hunt_id=HUNT, filter=FLOW_ID, limit=5)
    assert by_flow["total"] == TOTAL_ROWS
    # A nested value is matched as the JSON text a table cell shows.
    nested = await service.hunt_results_page(hunt_id=HUNT, filter='{"pid":49}', limit=5)
    assert [row["Index"] for row in nested["rows"]] == [49]
    nothing = await service.hunt_results_page(hunt_id=HUNT, filter="no such text")
    assert nothing == {"rows": [], "total": 0, "offset": 0}
    empty = await service.hunt_results_page(hunt_id=EMPTY_HUNT, filter="proc", offset=5)
    assert empty == {"rows": [], "total": 0, "offset": 5}
    assert await service.tally_hunt_results(hunt_id=EMPTY_HUNT, column="Name") == {
        "column": "Name", "values": [], "distinct": 0, "rows": 0, "truncated": False}


async def test_a_column_value_drill_down_pages_through_exactly_those_rows(running: Running
                                                                         ) -> None:
    wanted = [row for row in expected_rows() if row["User"] == "root"]
    rows, totals = await every_page(running.service, 64, column="User", value="root")
    assert rows == wanted and set(totals) == {300}
    # Exactly: a value is not a substring match, and numbers match as their text.
    assert (await running.service.hunt_results_page(
        hunt_id=HUNT, column="User", value="roo"))["total"] == 0
    assert (await running.service.hunt_results_page(
        hunt_id=HUNT, column="Index", value="42"))["total"] == 3
    # A row without the column has the value "".
    assert (await running.service.hunt_results_page(
        hunt_id=HUNT, column="Extra", value=""))["total"] == 2500
    # With a filter too: both must hold.
    both = await running.service.hunt_results_page(hunt_id=HUNT, column="User", value="root",
                                                    filter="web-2", limit=1000)
    assert both["total"] == 100 and {r["ClientId"] for r in both["rows"]} == {
        "C.00000000000000b2"}


async def test_a_column_without_a_value_is_refused(running: Running) -> None:
    with pytest.raises(ServiceError, match="column and value go together"):
        await running.service.hunt_results_page(hunt_id=HUNT, column="User")


async def test_a_filter_remembered_between_pages_sees_rows_stored_since(
        tmp_path: Path, database_url: str | None) -> None:
    """Paging a filter reads the hunt once and remembers where it matched; rows stored after
    that (a client finishing later) are in the next page and the total all the same."""
    datastore = await build_datastore(tmp_path / "datastore", database_url)
    db = await Database.open(datastore.database_target())
    try:
        cache = MatchCache()
        wanted = RowFilter("proc-3")

        def added(member: HuntMember) -> dict[str, Any]:
            return {"ClientId": member.client_id}

        expected = [row for row in expected_rows() if row["Name"] == "proc-3"]
        first, total = await filtered_page(db.results, HUNT, added, wanted, 0, 5, cache)
        assert total == len(expected)
        assert [row["Index"] for row in first] == [row["Index"] for row in expected[:5]]
        last, again = await filtered_page(db.results, HUNT, added, wanted, total - 2, 5, cache)
        assert again == total
        assert [row["Index"] for row in last] == [row["Index"] for row in expected[-2:]]

        late = "C.00000000000000d4"
        build = DataBuilder(db)
        now = time.time()
        await build.client(late, {"Hostname": "late"}, first_seen=now, last_seen=now)
        await build.check(HUNT, late, matched=True, at=now)
        await build.collect(HUNT, late, created=now, started=now, finished=now,
                            batches=[[{"Index": n, "Name": "proc-3"} for n in range(4)]])
        tail, grown = await filtered_page(db.results, HUNT, added, wanted, total - 1, 10, cache)
        assert grown == total + 4
        assert [row["ClientId"] for row in tail] == [expected[-1]["ClientId"]] + [late] * 4
    finally:
        await db.close()


async def test_scans_and_pages_cross_read_groups_of_many_small_and_a_few_big_batches(
    tmp_path: Path, database_url: str | None
) -> None:
    """Agents send what they have when they have it: one client's rows in hundreds of
    one-row batches (more than one read takes), another's in batches of a megabyte (more
    bytes than one read takes). Every row is read once, in order, and any page is exact."""
    db = await Database.open(database_url or tmp_path / "velotui.db")
    try:
        build = DataBuilder(db)
        now = time.time()
        hunt = "H.0000000000BAT"
        many, big = "C.000000000000000a", "C.000000000000000b"
        await build.hunt(hunt, "SELECT 1", created=now, started=now, expires=now + 3600)
        for offset, client_id in enumerate((many, big)):
            await build.client(client_id, {"Hostname": client_id}, first_seen=now,
                               last_seen=now)
            await build.check(hunt, client_id, matched=True, at=now + offset)
        small_batches = [[{"Index": n}] for n in range(BATCHES_PER_READ * 2 + 10)]
        await build.collect(hunt, many, created=now, started=now, finished=now,
                            batches=small_batches)
        filler = "x" * (BYTES_PER_READ // 3)
        big_batches = [[{"Index": n, "Filler": filler}] for n in range(7)]
        await build.collect(hunt, big, created=now, started=now, finished=now,
                            batches=big_batches)

        scanned = [(batch.member.client_id, batch.seq, batch.rows[0]["Index"])
                   async for batch in db.results.hunt_batches(hunt)]
        expected = ([(many, n + 1, n) for n in range(len(small_batches))]
                    + [(big, n + 1, n) for n in range(len(big_batches))])
        assert scanned == expected

        every = [(client_id, index) for client_id, _seq, index in expected]
        for offset, limit in ((0, 1), (BATCHES_PER_READ - 1, 3), (len(small_batches) - 2, 5),
                              (len(every) - 1, 10), (len(every), 10), (0, len(every))):
            page, total = await db.results.results_page(hunt, offset, limit)
            assert total == len(every)
            assert [(m.client_id, row["Index"]) for m, row in page] == \
                every[offset:offset + limit]
    finally:
        await db.close()


def test_remembered_filters_are_bounded_by_the_matches_they_hold() -> None:
    cache = MatchCache(max_matches=10)

    def index(matches: int) -> MatchIndex:
        return MatchIndex((1,), [], array("q", range(matches)))

    cache.put(HUNT, RowFilter("a"), index(6))
    cache.put(HUNT, RowFilter("b"), index(4))
    assert cache.get(HUNT, RowFilter("a"), (1,)) is not None  # now the most recent
    cache.put(HUNT, RowFilter("c"), index(3))  # 13 > 10: the least recent goes
    assert cache.get(HUNT, RowFilter("b"), (1,)) is None
    assert cache.get(HUNT, RowFilter("a"), (1,)) is not None
    assert cache.get(HUNT, RowFilter("a"), (2,)) is None  # the hunt changed: read again
    cache.put(HUNT, RowFilter("d"), index(11))  # more than all it may hold: not kept
    assert cache.get(HUNT, RowFilter("d"), (1,)) is None


# Tallies ------------------------------------------------------------------------------------------


async def test_a_tally_counts_every_row_by_value_with_its_clients(running: Running) -> None:
    tally = await running.service.tally_hunt_results(hunt_id=HUNT, column="User")
    assert tally == {
        "column": "User",
        "values": [{"value": "alice", "rows": 2700, "clients": 3},
                   {"value": "root", "rows": 300, "clients": 3}],
        "distinct": 2, "rows": TOTAL_ROWS, "truncated": False,
    }
    by_client = await running.service.tally_hunt_results(hunt_id=HUNT, column="ClientId")
    assert [(v["value"], v["rows"], v["clients"]) for v in by_client["values"]] == [
        ("C.00000000000000a1", 1500, 1), ("C.00000000000000b2", 1000, 1),
        ("C.00000000000000c3", 500, 1)]


async def test_a_tally_ranks_ties_by_value_counts_missing_as_empty_and_says_when_cut(
    running: Running
) -> None:
    names = await running.service.tally_hunt_results(hunt_id=HUNT, column="Name", limit=3)
    assert names["distinct"] == 7 and names["truncated"] is True and names["rows"] == 3000
    # 3000 rows over 7 names: proc-0 .. proc-5 ... counted exactly, most first, ties by value.
    expected: dict[str, int] = {}
    for row in expected_rows():
        expected[row["Name"]] = expected.get(row["Name"], 0) + 1
    ranked = sorted(expected.items(), key=lambda item: (-item[1], item[0]))[:3]
    assert [(v["value"], v["rows"]) for v in names["values"]] == ranked
    extra = await running.service.tally_hunt_results(hunt_id=HUNT, column="Extra", limit=1)
    assert extra["values"] == [{"value": "", "rows": 2500, "clients": 2}]
    assert extra["distinct"] == 501 and extra["truncated"] is True
    filtered = await running.service.tally_hunt_results(hunt_id=HUNT, column="User",
                                                        filter="db-1")
    assert filtered["rows"] == 500
    assert filtered["values"] == [{"value": "alice", "rows": 450, "clients": 1},
                                  {"value": "root", "rows": 50, "clients": 1}]


# Pages of a hunt's clients ------------------------------------------------------------------------


async def test_pages_of_a_hunts_clients_filter_on_names_queue_and_state(running: Running
                                                                       ) -> None:
    service = running.service
    every = await service.hunt_clients_page(hunt_id=HUNT, limit=2)
    assert every["total"] == 3 and len(every["clients"]) == 2
    rest = await service.hunt_clients_page(hunt_id=HUNT, offset=2, limit=2)
    assert [c["client_id"] for c in every["clients"] + rest["clients"]] == list(CLIENTS)
    assert every["clients"] == (await service.hunt_clients(hunt_id=HUNT))[:2]
    web = await service.hunt_clients_page(hunt_id=HUNT, filter="WEB-")
    assert [c["hostname"] for c in web["clients"]] == ["web-1", "web-2"]
    assert web["total"] == 2
    second = await service.hunt_clients_page(hunt_id=HUNT, filter="web-", offset=1, limit=1)
    assert [c["hostname"] for c in second["clients"]] == ["web-2"] and second["total"] == 2
    by_queue = await service.hunt_clients_page(hunt_id=HUNT, filter="results")
    assert by_queue["total"] == 3
    by_state = await service.hunt_clients_page(hunt_id=HUNT, filter="finished")
    assert by_state["total"] == 3
    assert (await service.hunt_clients_page(hunt_id=HUNT, queue="errors"))["total"] == 0
    assert (await service.hunt_clients_page(hunt_id=HUNT, filter="c3.corp"))["total"] == 0
    assert (await service.hunt_clients_page(hunt_id=HUNT, filter="db-1.corp"))["total"] == 1


# Queries over stored data -------------------------------------------------------------------------


async def test_hunt_results_gives_every_stored_row_with_client_fqdn_and_flow_first(
    running: Running
) -> None:
    result = await running.service.query_hunt(hunt_id=HUNT, query="SELECT * FROM hunt_results()",
                                              limit=5000)
    assert result["truncated"] is False and result["limit"] == 5000
    assert result["rows"] == expected_rows()
    assert list(result["rows"][0])[:3] == ["ClientId", "Fqdn", "FlowId"]
    counted = await running.service.query_hunt(hunt_id=HUNT, query=(
        "SELECT ClientId, count() AS Rows FROM hunt_results() WHERE User = 'root'"
        " GROUP BY ClientId ORDER BY ClientId"))
    assert counted["rows"] == [{"ClientId": "C.00000000000000a1", "Rows": 150},
                               {"ClientId": "C.00000000000000b2", "Rows": 100},
                               {"ClientId": "C.00000000000000c3", "Rows": 50}]
    # A column only some rows have is NULL where missing, not an error.
    extra = await running.service.query_hunt(hunt_id=HUNT, query=(
        "SELECT Index, Extra.pid AS Pid FROM hunt_results() WHERE Index = 7"))
    assert extra["rows"] == [{"Index": 7, "Pid": None}, {"Index": 7, "Pid": None},
                             {"Index": 7, "Pid": 7}]


async def test_hunt_results_reads_another_hunt_and_selects_artifacts_and_sources(
    running: Running
) -> None:
    async def names(query: str) -> list[str]:
        result = await running.service.query_hunt(hunt_id=HUNT, query=query)
        return [row["Name"] for row in result["rows"]]

    base = f"SELECT Name FROM hunt_results(hunt_id='{ARTIFACT_HUNT}'"
    assert await names(base + ")") == ["a", "b", "c", "d"]
    assert await names(base + ", artifact='Linux.Sys.Users')") == ["a", "b"]
    assert await names(base + ", artifact='Generic.Client.Info')") == ["c", "d"]
    assert await names(base + ", artifact='Generic.Client.Info', source='Users')") == ["d"]
    assert await names(base + ", source='Users')") == ["d"]
    assert await names(base + ", artifact='Generic.Client')") == []
    # The hunt queried is the default.
    other = await running.service.query_hunt(
        hunt_id=ARTIFACT_HUNT, query="SELECT Name FROM hunt_results(source='BasicInformation')")
    assert other["rows"] == [{"Name": "c"}]
    empty = await running.service.query_hunt(hunt_id=EMPTY_HUNT,
                                             query="SELECT * FROM hunt_results()")
    assert empty == {"rows": [], "truncated": False, "limit": 1000}


async def test_hunts_and_clients_plugins_list_what_the_api_lists(running: Running) -> None:
    service = running.service
    hunts = await service.query_hunt(hunt_id=HUNT, query="SELECT * FROM hunts()")
    assert hunts["rows"] == await service.list_hunts()
    assert [h["hunt_id"] for h in hunts["rows"]] == [EMPTY_HUNT, ARTIFACT_HUNT, HUNT]
    clients = await service.query_hunt(
        hunt_id=HUNT, query="SELECT client_id, hostname FROM clients() ORDER BY hostname")
    assert clients["rows"] == [{"client_id": "C.00000000000000c3", "hostname": "db-1"},
                               {"client_id": "C.00000000000000a1", "hostname": "web-1"},
                               {"client_id": "C.00000000000000b2", "hostname": "web-2"}]
    joined = await service.query_hunt(hunt_id=HUNT, query=(
        "LET Hosts <= SELECT client_id, hostname FROM clients()\n"
        "SELECT hostname, count() AS Rows FROM foreach(row=Hosts, query={"
        " SELECT hostname FROM hunt_results() WHERE ClientId = client_id })"
        " GROUP BY hostname ORDER BY hostname"))
    assert joined["rows"] == [{"hostname": "db-1", "Rows": 500},
                              {"hostname": "web-1", "Rows": 1500},
                              {"hostname": "web-2", "Rows": 1000}]


async def test_a_query_stops_at_its_limit_and_says_it_was_cut(running: Running) -> None:
    service = running.service
    cut = await service.query_hunt(hunt_id=HUNT, query="SELECT * FROM hunt_results()",
                                   limit=100)
    assert cut["truncated"] is True and cut["rows"] == expected_rows()[:100]
    exact = await service.query_hunt(hunt_id=HUNT, query="SELECT * FROM hunt_results()",
                                     limit=TOTAL_ROWS)
    assert exact["truncated"] is False and len(exact["rows"]) == TOTAL_ROWS


async def test_malformed_vql_is_refused_with_line_and_column(running: Running) -> None:
    with pytest.raises(ServiceError) as refused:
        await running.service.query_hunt(hunt_id=HUNT,
                                         query="SELECT *\nFROM hunt_results(\nWHERE")
    message = str(refused.value)
    assert "\n" not in message and "does not parse" in message
    assert "line 3, col 1" in message


@pytest.mark.parametrize(("query", "named"), [
    ("SELECT * FROM glob(globs='/etc/*')", "unknown plugin glob()"),
    ("SELECT * FROM execve(argv=['id'])", "unknown plugin execve()"),
    ("SELECT * FROM info()", "unknown plugin info()"),
    ("SELECT read_file(filename='/etc/passwd') FROM scope()", "unknown function read_file()"),
    ("SELECT sleep(time=10) FROM scope()", "unknown function sleep()"),
    ("SELECT * FROM query(query='SELECT * FROM glob(globs=\"/*\")')", "unknown plugin query()"),
    ("SELECT environ(var='HOME') FROM scope()", "unknown function environ()"),
    ("SELECT Nonesuch FROM hunt_results()", "Nonesuch is not defined"),
    ("SELECT * FROM hunt_results(hunt_id='H.0000000000XXX')", "no hunt 'H.0000000000XXX'"),
])
async def test_anything_but_stored_data_and_pure_functions_is_refused_on_the_server(
    running: Running, query: str, named: str
) -> None:
    with pytest.raises(ServiceError) as refused:
        await running.service.query_hunt(hunt_id=HUNT, query=query)
    assert named in str(refused.value)
    assert "\n" not in str(refused.value)


async def test_a_query_past_its_time_limit_is_stopped_and_refused() -> None:
    async def no_rows(_hunt_id: str) -> AsyncIterator[dict[str, Any]]:
        return
        yield

    async def nothing() -> list[dict[str, Any]]:
        return []

    data = StoredData(HUNT, no_rows, nothing, nothing)
    with pytest.raises(QueryRefused, match=r"ran longer than 0.2 s and was stopped"):
        await run_query("SELECT * FROM range(end=1000000000000) WHERE _value < 0", data, 10,
                        time_limit=0.2)


async def test_queries_are_audited_refused_or_not(running: Running) -> None:
    service = running.service
    await service.query_hunt(hunt_id=HUNT, query="SELECT * FROM hunt_results()", limit=10)
    with pytest.raises(RemoteError):  # a refusal is recorded by the operator API
        await running.remote.query_hunt(hunt_id=HUNT, query="SELECT * FROM glob(globs='/*')")
    entries = [e for e in await service.audit_log() if e["action"] == "query_hunt"]
    assert [e["target"] for e in entries] == [HUNT] * 2
    assert entries[0]["actor"] == "analyst"
    assert entries[0]["details"] == {"query": "SELECT * FROM hunt_results()", "rows": 10,
                                     "truncated": True}
    assert entries[1]["outcome"] == "refused"
    assert entries[1]["reason"].startswith("unknown plugin glob()")


# Through the operator API -------------------------------------------------------------------------


async def test_the_operator_api_serves_every_triage_method(running: Running) -> None:
    remote = running.remote
    page = await remote.hunt_results_page(hunt_id=HUNT, filter="proc-3", offset=10, limit=5)
    assert page == await running.service.hunt_results_page(hunt_id=HUNT, filter="proc-3",
                                                           offset=10, limit=5)
    drill = await remote.hunt_results_page(hunt_id=HUNT, column="User", value="root")
    assert drill["total"] == 300
    tally = await remote.tally_hunt_results(hunt_id=HUNT, column="User")
    assert tally["values"][0] == {"value": "alice", "rows": 2700, "clients": 3}
    clients = await remote.hunt_clients_page(hunt_id=HUNT, filter="web-2")
    assert [c["hostname"] for c in clients["clients"]] == ["web-2"] and clients["total"] == 1
    result = await remote.query_hunt(hunt_id=HUNT, query="SELECT count() AS Rows FROM"
                                     " hunt_results() GROUP BY 1", limit=5)
    assert result == {"rows": [{"Rows": TOTAL_ROWS}], "truncated": False, "limit": 5}
    with pytest.raises(RemoteError) as refused:
        await remote.query_hunt(hunt_id=HUNT, query="SELECT * FROM execve(argv=['id'])")
    assert "unknown plugin execve()" in str(refused.value) and "\n" not in str(refused.value)
    with pytest.raises(RemoteError, match="line 1"):
        await remote.query_hunt(hunt_id=HUNT, query="SELECT * FROM")


# Labels -------------------------------------------------------------------------------------------


async def test_removing_a_label_the_agents_configuration_sets_is_refused(running: Running
                                                                        ) -> None:
    client_id = "C.00000000000000a1"
    service = running.service
    await service.label_client(client_id=client_id, add=["triage"])
    with pytest.raises(ServiceError) as refused:
        await service.label_client(client_id=client_id, remove=["triage", "prod"])
    assert str(refused.value) == (f"{client_id}: label 'prod' comes from the agent's"
                                  " configuration; change it there (velotui agent-config"
                                  " --label)")
    # Nothing changed, not even the label that could have gone.
    client = next(c for c in await service.list_clients() if c["client_id"] == client_id)
    assert client["labels"] == ["prod", "triage"]
    removed = await service.label_client(client_id=client_id, remove=["triage"])
    assert removed["labels"] == ["prod"]

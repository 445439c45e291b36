"""netstat(), client_info(), pslist() and getpid() against this machine's real sockets and
processes."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator

import pytest

from agent.plugins import client_registry
from agent.plugins.connections import netstat
from agent.plugins.info import machine_info
from tests.test_client_plugins import make_scope, rows_of
from velotui.vql import collect

NETSTAT_COLUMNS = {"Fd", "Family", "Type", "FamilyString", "TypeString", "Status", "Laddr",
                   "Raddr", "Pid", "Timestamp"}


@pytest.fixture
def listening() -> Iterator[tuple[socket.socket, socket.socket, socket.socket]]:
    """A TCP socket listening on loopback, a client connected to it and the accepted end."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    try:
        yield server, client, accepted
    finally:
        for each in (accepted, client, server):
            each.close()


async def test_netstat_shows_a_listening_socket_and_a_connection_of_ours(listening) -> None:
    server, client, _ = listening
    port = server.getsockname()[1]
    scope, logs = make_scope()
    rows = await rows_of(netstat, scope)
    assert logs.errors() == []
    assert all(set(row) == NETSTAT_COLUMNS for row in rows)
    [listener] = [row for row in rows if row["Status"] == "LISTEN"
                  and row["Laddr"] == {"IP": "127.0.0.1", "Port": port}]
    assert listener["FamilyString"] == "IPv4" and listener["TypeString"] == "TCP"
    assert listener["Family"] == socket.AF_INET and listener["Type"] == socket.SOCK_STREAM
    assert listener["Raddr"] == {"IP": "0.0.0.0", "Port": 0}
    assert listener["Pid"] == os.getpid()
    [outgoing] = [row for row in rows
                  if row["Laddr"]["Port"] == client.getsockname()[1]
                  and row["Raddr"] == {"IP": "127.0.0.1", "Port": port}]
    assert outgoing["Status"] == "ESTABLISHED" and outgoing["Pid"] == os.getpid()


async def test_netstat_in_a_query_like_the_listening_ports_artifacts(listening) -> None:
    server, _, _ = listening
    port = server.getsockname()[1]
    rows = await collect(
        "SELECT Pid, Laddr.IP AS Address, Laddr.Port AS Port, TypeString AS Protocol, "
        "FamilyString AS Family FROM netstat() WHERE Status = 'LISTEN' AND Laddr.Port = Wanted",
        registry=client_registry(), env={"Wanted": port})
    assert rows == [{"Pid": os.getpid(), "Address": "127.0.0.1", "Port": port,
                     "Protocol": "TCP", "Family": "IPv4"}]


async def test_netstat_shows_udp_sockets_with_status_none() -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as udp:
        udp.bind(("::1", 0))
        port = udp.getsockname()[1]
        scope, _ = make_scope()
        [row] = [row for row in await rows_of(netstat, scope) if row["Laddr"]["Port"] == port]
    assert (row["FamilyString"], row["TypeString"], row["Status"]) == ("IPv6", "UDP", "NONE")
    assert row["Laddr"]["IP"] == "::1" and row["Raddr"] == {"IP": "::", "Port": 0}


# client_info ----------------------------------------------------------------------------------


async def test_client_info_reports_this_host_its_client_id_and_labels() -> None:
    registry = client_registry(labels=["Finance"], client_id="C.0123456789abcdef")
    [row] = await collect(
        "SELECT client_info() AS C, client_info(client_id='C.0123456789abcdef').os_info.fqdn "
        "AS F FROM scope()", registry=registry)
    record, machine = row["C"], machine_info()
    assert record["ClientId"] == record["client_id"] == "C.0123456789abcdef"
    assert record["Hostname"] == socket.gethostname() == record["os_info"]["hostname"]
    assert record["Fqdn"] == machine["Fqdn"] == row["F"]
    assert record["OS"] == "linux" == record["os_info"]["system"]
    assert record["Architecture"] == machine["Architecture"] == record["os_info"]["machine"]
    assert record["Platform"] == machine["Platform"]
    assert record["Labels"] == record["labels"] == ["Finance"]


async def test_client_info_of_a_simulated_host_and_of_another_client() -> None:
    facts = {"Hostname": "FIN-WKS-0007", "OS": "windows", "Labels": ["HR"]}
    logs: list[tuple[str, str]] = []
    [row] = await collect(
        "SELECT client_info() AS C, client_info(client_id='C.other') AS Other FROM scope()",
        registry=client_registry(facts=facts), on_log=lambda *entry: logs.append(entry))
    assert row["C"]["Hostname"] == "FIN-WKS-0007" and row["C"]["OS"] == "windows"
    assert row["C"]["ClientId"] is None and row["C"]["Labels"] == ["HR"]
    assert row["Other"] is None
    assert logs == [("error", "client_info(): only this client is known on an agent, "
                              "not 'C.other'")]


# pslist and getpid ----------------------------------------------------------------------------


PSLIST_COLUMNS = {"Pid", "Ppid", "Name", "Exe", "CommandLine", "Username", "CreateTime",
                  "Status", "Threads", "MemoryInfo", "Times", "Cwd", "User", "System"}


@pytest.fixture
def child() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()",
                                "pslist-marker"], stdin=subprocess.PIPE)
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def test_pslist_of_a_child_has_velociraptors_columns(child: subprocess.Popen[bytes]) -> None:
    rows = await collect(f"SELECT * FROM pslist(pid={child.pid})", registry=client_registry())
    [row] = rows
    assert set(row) == PSLIST_COLUMNS
    assert row["Pid"] == child.pid and row["Ppid"] == os.getpid()
    assert row["CommandLine"].endswith("import sys; sys.stdin.read() pslist-marker")
    assert row["Exe"] == os.path.realpath(sys.executable)
    assert set(row["MemoryInfo"]) >= {"RSS", "VMS", "rss", "vms"}
    assert set(row["Times"]) == {"user", "system"}
    assert row["User"] == row["Times"]["user"] and row["System"] == row["Times"]["system"]
    assert row["Cwd"] == os.getcwd()


async def test_getpid_finds_the_agent_in_pslist_like_the_client_stats_artifact() -> None:
    rows = await collect("SELECT Pid, getpid() AS Me, MemoryInfo.RSS > 0 AS HasMemory, "
                         "Times.system + Times.user >= 0 AS HasTimes FROM pslist(pid=getpid())",
                         registry=client_registry())
    assert rows == [{"Pid": os.getpid(), "Me": os.getpid(), "HasMemory": True,
                     "HasTimes": True}]


async def test_process_tracker_pslist_lists_the_same_processes(child) -> None:
    rows = await collect("SELECT Pid, Name FROM process_tracker_pslist() WHERE Pid = Wanted",
                         registry=client_registry(), env={"Wanted": child.pid})
    assert [row["Pid"] for row in rows] == [child.pid]


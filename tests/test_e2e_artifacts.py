"""Artifacts end to end: `velotui serve`, real agents, and the command line. An artifact hunt
with typed parameters, an artifact it calls, rows that name their source, and an export with one
file per source; definitions imported into the server's library (checked, audited, refused with
file and line); `velotui artifacts` on this machine."""

from __future__ import annotations

import csv
import io
import json
import textwrap
import zipfile
from pathlib import Path

import pytest

from tests.processes import (
    AgentProcess,
    ServerProcess,
    running,
    velotui,
    wait_for_clients,
    write_agent_config,
)
from tests.test_e2e_hunt import cli, wait_settled
from velotui.server.datastore import Datastore

pytestmark = pytest.mark.slow

HOSTS = """\
    name: Custom.Test.Hosts
    description: The simulated host's name, a parameter's type and a called artifact.
    parameters:
      - name: Times
        type: int
        default: "2"
      - name: Loud
        type: bool
      - name: Tags
        type: csv
        default: |
          Tag
          first
    sources:
      - name: Host
        query: |
          SELECT Hostname, Times * 10 AS Tens, Loud FROM info()
      - name: Tags
        query: |
          SELECT Tag, Times FROM Tags
      - name: Called
        query: |
          LET host <= SELECT Hostname FROM info()
          SELECT * FROM Artifact.Custom.Test.Echo(Text=host[0].Hostname)
    """
ECHO = """\
    name: Custom.Test.Echo
    parameters:
      - name: Text
        default: nothing
    sources:
      - query: SELECT Text + "!" AS Echoed FROM scope()
    """


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def fleet(tmp_path: Path):
    datastore = tmp_path / "datastore"
    Datastore.open(datastore)
    server = ServerProcess(datastore).start()
    config = write_agent_config(datastore, server.url, tmp_path / "agent.json")
    agents = AgentProcess(config, tmp_path / "fleet", "--simulate", "3").start()
    with running(server, agents):
        wait_for_clients(datastore, 3)
        yield server


def test_an_artifact_hunt_runs_typed_parameters_and_exports_one_file_per_source(
        fleet: ServerProcess, tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    _write(definitions, "hosts.yaml", HOSTS)
    _write(definitions, "echo.yaml", ECHO)

    created = cli(fleet, "hunt", "create", "--artifact", "Custom.Test.Hosts",
                  "--definitions", str(definitions), "--param", "Times=3", "--param",
                  "Loud=Y", "--param", "Tags=Tag\nred\nblue\n", "--start", "--json")
    assert created.returncode == 0, created.stderr
    hunt = json.loads(created.stdout)
    assert hunt["artifacts"][0]["name"] == "Custom.Test.Hosts"
    assert hunt["artifacts"][0]["parameters"]["Times"] == "3"
    assert hunt["artifacts"][0]["sources"] == [
        "Custom.Test.Hosts/Host", "Custom.Test.Hosts/Tags", "Custom.Test.Hosts/Called"]
    settled = wait_settled(fleet, hunt["hunt_id"], 3)
    assert settled["counts"]["results"] == 3, settled
    shown = cli(fleet, "hunt", "show", hunt["hunt_id"]).stdout
    assert "artifact:          Custom.Test.Hosts  (Times=3; Loud=Y; Tags=" in shown
    assert "collection:" not in shown  # the compiled VQL is in --json, not in the summary

    rows = [json.loads(line) for line in
            cli(fleet, "hunt", "results", hunt["hunt_id"]).stdout.splitlines()]
    by_source: dict[str, list[dict]] = {}
    for row in rows:
        by_source.setdefault(row["_Source"], []).append(row)
    hosts = by_source["Custom.Test.Hosts/Host"]
    assert len(hosts) == 3
    assert {r["Tens"] for r in hosts} == {30}  # "3" became the number 3
    assert {r["Loud"] for r in hosts} == {True}  # "Y" became TRUE
    assert sorted(r["Tag"] for r in by_source["Custom.Test.Hosts/Tags"]) == \
        ["blue", "blue", "blue", "red", "red", "red"]  # the csv became rows
    echoed = sorted(r["Echoed"] for r in by_source["Custom.Test.Hosts/Called"])
    assert echoed == sorted(f"{r['Hostname']}!" for r in hosts)  # a called artifact's rows

    archive = tmp_path / "hunt.zip"
    exported = cli(fleet, "hunt", "export", hunt["hunt_id"], "-o", str(archive), "--format",
                   "both")
    assert exported.returncode == 0, exported.stderr
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        assert {"results/All.jsonl", "results/Custom.Test.Hosts/Host.jsonl",
                "results/Custom.Test.Hosts/Host.csv", "results/Custom.Test.Hosts/Tags.jsonl",
                "results/Custom.Test.Hosts/Called.csv"} <= names
        all_rows = [json.loads(line) for line in
                    zipped.read("results/All.jsonl").decode().splitlines()]
        assert len(all_rows) == len(rows) and all("_Source" in r for r in all_rows)
        host_rows = [json.loads(line) for line in
                     zipped.read("results/Custom.Test.Hosts/Host.jsonl").decode().splitlines()]
        assert len(host_rows) == 3
        assert list(host_rows[0]) == ["ClientId", "Fqdn", "FlowId", "Hostname", "Tens", "Loud"]
        table = list(csv.reader(io.StringIO(
            zipped.read("results/Custom.Test.Hosts/Tags.csv").decode())))
        assert table[0] == ["ClientId", "Fqdn", "FlowId", "Tag", "Times"]
        assert len(table) == 7
        document = json.loads(zipped.read("hunt.json"))
        assert document["artifacts"][0]["parameters"]["Loud"] == "Y"


def test_a_bad_parameter_or_artifact_is_refused_in_one_line(fleet: ServerProcess,
                                                           tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    _write(definitions, "hosts.yaml", HOSTS)
    _write(definitions, "echo.yaml", ECHO)
    for args, reason in (
        (["--param", "Times=many"], "Custom.Test.Hosts: parameter Times (int): 'many' is not"
                                    " a whole number"),
        (["--param", "Tiems=3"], "no artifact named here declares 'Tiems'"),
    ):
        refused = cli(fleet, "hunt", "create", "--artifact", "Custom.Test.Hosts",
                      "--definitions", str(definitions), *args)
        assert refused.returncode != 0
        assert refused.stderr.count("\n") == 1 and reason in refused.stderr, refused.stderr
    unknown = cli(fleet, "hunt", "create", "--artifact", "Custom.Nope")
    assert unknown.returncode != 0 and "no artifact 'Custom.Nope'" in unknown.stderr
    both = cli(fleet, "hunt", "create", "--artifact", "Generic.Client.Info", "--query",
               "SELECT * FROM info()")
    assert both.returncode == 2 and "--query VQL or with --artifact NAME" in both.stderr
    assert json.loads(cli(fleet, "hunt", "list", "--json").stdout or "null") is None


def test_imported_definitions_join_the_servers_library_all_or_none(fleet: ServerProcess,
                                                                   tmp_path: Path) -> None:
    good = tmp_path / "good"
    _write(good, "hosts.yaml", HOSTS)
    _write(good, "echo.yaml", ECHO)
    broken = tmp_path / "broken"
    _write(broken, "echo.yaml", ECHO.replace("Custom.Test.Echo", "Custom.Test.Echo2"))
    _write(broken, "bad.yaml", "name: Custom.Bad\nsources:\n  - query: SELECT * FROM\n")

    refused = cli(fleet, "artifacts", "import", str(broken))
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"velotui artifacts import: {broken / 'bad.yaml'}:3: "
                                     "source 1 query: VQL does not parse"), refused.stderr
    orphan = tmp_path / "orphan"
    _write(orphan, "hosts.yaml", HOSTS)  # calls Custom.Test.Echo, which is not sent along
    refused = cli(fleet, "artifacts", "import", str(orphan))
    assert refused.returncode == 1 and "calls or imports Custom.Test.Echo" in refused.stderr
    assert not (fleet.datastore / "artifacts").exists() or \
        list((fleet.datastore / "artifacts").iterdir()) == []

    imported = cli(fleet, "artifacts", "import", str(good))
    assert imported.returncode == 0, imported.stderr
    assert sorted(imported.stdout.split()) == sorted(
        ["imported", "Custom.Test.Echo", "imported", "Custom.Test.Hosts"])
    assert sorted(p.name for p in (fleet.datastore / "artifacts").iterdir()) == [
        "Custom.Test.Echo.yaml", "Custom.Test.Hosts.yaml"]
    # The library now has them: a hunt names them without sending definitions.
    created = cli(fleet, "hunt", "create", "--artifact", "Custom.Test.Echo", "--param",
                  "Text=hi", "--start")
    assert created.returncode == 0, created.stderr
    settled = wait_settled(fleet, created.stdout.strip(), 3)
    assert settled["counts"]["results"] == 3
    listed = velotui("artifacts", "list", "Custom\\.Test", "--json", "--datastore",
                     str(fleet.datastore))
    assert [json.loads(line)["name"] for line in listed.stdout.splitlines()] == [
        "Custom.Test.Echo", "Custom.Test.Hosts"]
    audit = [json.loads(line) for line in cli(fleet, "audit", "--json").stdout.splitlines()]
    refused = [entry for entry in audit if entry["outcome"] == "refused"]
    assert refused and {entry["action"] for entry in refused} == {"import_artifacts"}
    audit = [entry for entry in audit if entry["outcome"] == "allowed"]  # the import that held
    assert audit[0]["action"] == "import_artifacts"
    assert audit[0]["details"]["artifacts"] == ["Custom.Test.Echo", "Custom.Test.Hosts"]


def test_artifacts_collect_runs_here_with_parameters_and_formats(tmp_path: Path) -> None:
    definitions = tmp_path / "definitions"
    _write(definitions, "hosts.yaml", HOSTS)
    _write(definitions, "echo.yaml", ECHO)
    empty = tmp_path / "no-datastore"
    collected = velotui("artifacts", "collect", "Custom.Test.Echo", "--param", "Text=hello",
                        "--definitions", str(definitions), "--datastore", str(empty))
    assert collected.returncode == 0, collected.stderr
    assert [json.loads(line) for line in collected.stdout.splitlines()] == [
        {"Echoed": "hello!", "_Source": "Custom.Test.Echo"}]
    table = velotui("artifacts", "collect", "Custom.Test.Hosts", "--param", "Times=1",
                    "--format", "csv", "--definitions", str(definitions), "--datastore",
                    str(empty))
    assert table.returncode == 0, table.stderr
    assert "first" in table.stdout
    nothing = _write(definitions, "nothing.yaml", """\
        name: Custom.Test.Nothing
        sources:
          - query: SELECT * FROM scope() WHERE FALSE
        """)
    assert nothing.exists()
    quiet = velotui("artifacts", "collect", "Custom.Test.Nothing", "--definitions",
                    str(definitions), "--datastore", str(empty))
    assert quiet.returncode == 0 and quiet.stdout == ""
    assert quiet.stderr.strip() == "Custom.Test.Nothing: nothing found"
    shown = velotui("artifacts", "show", "Custom.Test.Echo", "--definitions", str(definitions),
                    "--datastore", str(empty))
    assert shown.stdout == textwrap.dedent(ECHO)
    vql = velotui("artifacts", "show", "Custom.Test.Echo", "--vql", "--definitions",
                  str(definitions), "--datastore", str(empty))
    assert "_ArtifactName='Custom.Test.Echo'" in vql.stdout and "query(query=" in vql.stdout
    bad = velotui("artifacts", "collect", "Custom.Test.Echo", "--param", "Nope=1",
                  "--definitions", str(definitions), "--datastore", str(empty))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_artifacts_collect_keeps_uploaded_files_with_output(tmp_path: Path) -> None:
    evidence = tmp_path / "case" / "evidence.log"
    evidence.parent.mkdir()
    evidence.write_text("suspicious line\n")
    definitions = tmp_path / "definitions"
    _write(definitions, "grab.yaml", """\
        name: Custom.Test.Grab
        parameters: [{name: Pattern}]
        sources:
          - query: |
              SELECT OSPath, upload(file=OSPath) AS Upload FROM glob(globs=Pattern)
        """)
    common = ["--param", f"Pattern={tmp_path}/case/*.log", "--definitions", str(definitions),
              "--datastore", str(tmp_path / "none")]
    refused = velotui("artifacts", "collect", "Custom.Test.Grab", *common)
    assert refused.returncode == 1 and "--output DIR" in refused.stderr
    output = tmp_path / "out"
    kept = velotui("artifacts", "collect", "Custom.Test.Grab", "--output", str(output), *common)
    assert kept.returncode == 0, kept.stderr
    [row] = [json.loads(line) for line in kept.stdout.splitlines()]
    stored = Path(row["Upload"]["StoredPath"])
    assert stored.is_relative_to(output / "uploads")
    assert stored.read_text() == "suspicious line\n"
    assert row["Upload"]["Size"] == 16


def test_collect_runs_artifacts_on_one_client_and_the_flow_keeps_their_names(
        fleet: ServerProcess, tmp_path: Path) -> None:
    """`velotui collect CLIENT --artifact NAME` compiles on the server, runs on that agent
    alone, and the flow remembers what it ran (shown by `clients show`, not as VQL)."""
    definitions = tmp_path / "definitions"
    _write(definitions, "echo.yaml", ECHO)
    client_id = json.loads(cli(fleet, "clients", "--json").stdout.splitlines()[0])["client_id"]

    collected = cli(fleet, "collect", client_id, "--artifact", "Custom.Test.Echo",
                    "--definitions", str(definitions), "--param", "Text=hi")
    assert collected.returncode == 0, collected.stderr
    assert [json.loads(line)["Echoed"] for line in collected.stdout.splitlines()] == ["hi!"]

    shown = json.loads(cli(fleet, "clients", "show", client_id, "--json").stdout)
    [flow] = shown["collections"]
    assert [(a["name"], a["parameters"]) for a in flow["artifacts"]] == [
        ("Custom.Test.Echo", {"Text": "hi"})]
    assert "Custom.Test.Echo" in flow["query"]  # the compiled VQL is kept beside them
    assert "artifacts: Custom.Test.Echo" in cli(fleet, "clients", "show", client_id).stdout
    both = cli(fleet, "collect", client_id, "SELECT * FROM info()", "--artifact",
               "Custom.Test.Echo")
    assert both.returncode == 2 and "give the collection with VQL or with --artifact NAME" \
        in both.stderr

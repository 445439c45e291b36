"""The built-in artifacts that look at this machine's processes, sockets and files (process
lists with hashes, sockets, YARA over files and memory, the file finder, the hash hunter, the
collector), and the macOS and Windows ones, run here on fixture files laid out as on those
systems with their preconditions removed."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.test_artifact_library import collect, collect_with_uploads
from tests.test_artifact_library_linux import write

# Processes --------------------------------------------------------------------------------------

MARKER_RULE = 'rule marker { strings: $a = "VELOTUI_PROCESS_MARKER" condition: $a }'


@pytest.fixture
def marked_process() -> Iterator[subprocess.Popen[bytes]]:
    """A Python process holding a marker in memory that is not in its command line, and
    saying so once it does."""
    code = ("import sys, time\n"
            "marker = ''.join(['VELOTUI_', 'PROCESS_', 'MARKER']) * 4\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
            "time.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-c", code, "artifact-test-argument"],
                               stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"
    yield process
    process.kill()
    process.wait()


def test_process_list_with_command_lines_and_executable_hashes(
        marked_process: subprocess.Popen[bytes]) -> None:
    result = collect("Generic.System.Pslist", {"PidList": str(marked_process.pid)}).ok()
    assert len(result.rows) == 1
    row = result.rows[0]
    assert row["Pid"] == marked_process.pid
    assert row["Ppid"] == os.getpid()
    assert row["CommandLine"].endswith("artifact-test-argument")
    executable = os.path.realpath(f"/proc/{marked_process.pid}/exe")
    assert row["Exe"] == executable
    data = Path(executable).read_bytes()
    assert row["Hash"] == {"MD5": hashlib.md5(data).hexdigest(),
                           "SHA1": hashlib.sha1(data).hexdigest(),
                           "SHA256": hashlib.sha256(data).hexdigest()}
    by_command = collect("Generic.System.Pslist", {"CommandLineRegex": "artifact-test-argument",
                                                   "CalculateHashes": "N"}).ok()
    assert by_command.column("Pid") == [marked_process.pid]
    assert by_command.rows[0]["Hash"] is None


def test_linux_process_list_flags_an_executable_deleted_after_start(
        tmp_path: Path, marked_process: subprocess.Popen[bytes]) -> None:
    program = tmp_path / "implant"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", program)
    original = hashlib.sha256(program.read_bytes()).hexdigest()
    process = subprocess.Popen([str(program), "120"])
    try:
        program.unlink()
        pids = f"{process.pid},{marked_process.pid}"
        result = collect("Linux.Sys.Pslist", {"PidList": pids}).ok()
        assert {r["Pid"]: r["ExeDeleted"] for r in result.rows} == {
            process.pid: True, marked_process.pid: False}
        # Hashed through /proc/PID/exe, which still reads the deleted file.
        assert result.by("Pid")[process.pid]["Hash"]["SHA256"] == original
        only = collect("Linux.Sys.Pslist", {"PidList": pids,
                                            "OnlyDeletedExecutables": "Y"}).ok()
        assert only.column("Pid") == [process.pid]
    finally:
        process.kill()
        process.wait()


def test_process_memory_yara_scan_finds_the_marker(
        marked_process: subprocess.Popen[bytes]) -> None:
    result = collect("Linux.Detection.Yara.Process", {
        "PidRegex": f"^{marked_process.pid}$", "YaraRule": MARKER_RULE,
        "ContextBytes": "8"}).ok()
    assert len(result.rows) == 1
    hit = result.rows[0]
    assert (hit["Pid"], hit["Rule"], hit["HitName"]) == (marked_process.pid, "marker", "$a")
    # The address is where the marker is in the process's memory (its parent may read it).
    with open(f"/proc/{marked_process.pid}/mem", "rb") as memory:
        memory.seek(hit["HitAddress"])
        assert memory.read(22) == b"VELOTUI_PROCESS_MARKER"
    assert hit["CommandLine"].endswith("artifact-test-argument")


def test_process_memory_yara_scan_without_a_match(
        marked_process: subprocess.Popen[bytes]) -> None:
    rule = 'rule absent { strings: $a = "NOT_IN_THIS_PROCESS_4f1c" condition: $a }'
    result = collect("Linux.Detection.Yara.Process", {
        "PidRegex": f"^{marked_process.pid}$", "YaraRule": rule}).ok()
    assert result.rows == []


# Sockets ----------------------------------------------------------------------------------------


@pytest.fixture
def sockets() -> Iterator[dict[str, int]]:
    """A TCP listener with one connection to it, and a bound UDP socket, in this process."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    try:
        yield {"listen": listener.getsockname()[1], "client": client.getsockname()[1],
               "udp": udp.getsockname()[1]}
    finally:
        for each in (client, accepted, listener, udp):
            each.close()


def test_netstat_names_the_owning_process(sockets: dict[str, int]) -> None:
    port = sockets["listen"]
    result = collect("Generic.Network.Netstat", {"PortRegex": f"^{port}$"}).ok()
    states = {(r["Status"], r["LocalPort"], r["RemotePort"]) for r in result.rows}
    assert ("LISTEN", port, 0) in states
    assert ("ESTABLISHED", sockets["client"], port) in states
    assert ("ESTABLISHED", port, sockets["client"]) in states
    for row in result.rows:
        assert (row["Pid"], row["Exe"], row["Family"]) == \
            (os.getpid(), os.path.realpath(f"/proc/{os.getpid()}/exe"), "IPv4")
        assert row["LocalAddress"] == "127.0.0.1"
    listening = collect("Generic.Network.Netstat", {"PortRegex": f"^{port}$",
                                                    "StatusRegex": "LISTEN"}).ok()
    assert len(listening.rows) == 1


def test_listening_ports_tcp_and_udp(sockets: dict[str, int]) -> None:
    result = collect("Generic.Network.ListeningPorts").ok()
    mine = {(r["Type"].upper(), r["Port"]) for r in result.rows if r["Pid"] == os.getpid()}
    assert ("TCP", sockets["listen"]) in mine
    assert ("UDP", sockets["udp"]) in mine
    assert ("TCP", sockets["client"]) not in mine
    tcp_only = collect("Generic.Network.ListeningPorts", {"IncludeUDP": "N"}).ok()
    assert all(r["Type"].upper() == "TCP" for r in tcp_only.rows)


def test_interfaces_include_loopback() -> None:
    result = collect("Generic.Network.Interfaces", {"InterfaceRegex": "^lo$"}).ok()
    assert len(result.rows) == 1
    assert "127.0.0.1/8" in result.rows[0]["Addresses"]


# Files: finder, YARA, hashes, collection --------------------------------------------------------


@pytest.fixture
def evidence(tmp_path: Path) -> Path:
    root = tmp_path / "srv"
    write(root / "www/shell.php", '<?php eval($_POST["c"]); ?>\n')
    write(root / "www/index.php", '<?php echo "hello"; ?>\n')
    write(root / "notes/token.txt", "api token=ABC123 for the build\n")
    old = write(root / "notes/old.txt", "nothing of note\n")
    os.utime(old, (1_500_000_000, 1_500_000_000))
    (root / "big.bin").write_bytes(bytes(5000))
    return root


def test_file_finder_filters_by_size_time_name_and_content(evidence: Path) -> None:
    table = f"Glob\n{evidence}/**\n"
    everything = collect("Linux.Search.FileFinder", {"SearchFilesGlobTable": table}).ok()
    assert len(everything.rows) == 5
    small_recent = collect("Linux.Search.FileFinder", {
        "SearchFilesGlobTable": table, "MaxSize": "100", "ModifiedAfter": "2020-01-01"}).ok()
    assert sorted(small_recent.column("Name")) == ["index.php", "shell.php", "token.txt"]
    token = collect("Linux.Search.FileFinder", {
        "SearchFilesGlobTable": table, "ContentRegex": "token=[A-Z0-9]+",
        "CalculateHashes": "Y"}).ok()
    assert token.column("Name") == ["token.txt"]
    data = (evidence / "notes/token.txt").read_bytes()
    assert token.rows[0]["Hash"]["SHA256"] == hashlib.sha256(data).hexdigest()
    old = collect("Linux.Search.FileFinder", {
        "SearchFilesGlobTable": table, "ModifiedBefore": "2020-01-01", "NameRegex": "txt$"}).ok()
    assert old.column("Name") == ["old.txt"]
    assert old.rows[0]["Mtime"] == datetime.fromtimestamp(1_500_000_000, UTC)
    big = collect("Linux.Search.FileFinder", {"SearchFilesGlobTable": table,
                                              "MinSize": "1000"}).ok()
    assert big.column("Name") == ["big.bin"]


def test_file_finder_uploads_what_it_finds(evidence: Path, tmp_path: Path) -> None:
    result, stored = collect_with_uploads(tmp_path / "uploads", "Linux.Search.FileFinder", {
        "SearchFilesGlobTable": f"Glob\n{evidence}/www/shell.php\n", "UploadFiles": "Y"})
    assert len(result.rows) == 1
    upload = result.rows[0]["Upload"]
    assert upload["Path"] == str(evidence / "www/shell.php")
    assert stored == [(evidence / "www/shell.php").read_bytes()]


def test_yara_glob_scan_reports_the_rule_and_the_hit(evidence: Path, tmp_path: Path) -> None:
    result = collect("Generic.Detection.Yara.Glob", {"PathGlob": f"{evidence}/**"}).ok()
    assert len(result.rows) == 1
    hit = result.rows[0]
    assert (hit["OSPath"], hit["Rule"], hit["HitName"], hit["HitOffset"]) == \
        (str(evidence / "www/shell.php"), "WebShellMarkers", "$php_eval", 6)
    assert hit["Meta"]["description"]
    assert hit["Upload"] is None
    custom = collect("Generic.Detection.Yara.Glob", {
        "PathGlob": f"{evidence}/**",
        "YaraRule": 'rule token { strings: $t = "token=" condition: $t }'}).ok()
    assert custom.column("OSPath") == [str(evidence / "notes/token.txt")]
    uploaded, stored = collect_with_uploads(tmp_path / "uploads", "Generic.Detection.Yara.Glob", {
        "PathGlob": f"{evidence}/**", "UploadHits": "Y"})
    assert stored == [(evidence / "www/shell.php").read_bytes()]
    assert uploaded.rows[0]["Upload"]["sha256"] == \
        hashlib.sha256(stored[0]).hexdigest()


def test_hash_hunter_matches_any_algorithm_in_any_case(evidence: Path) -> None:
    shell = (evidence / "www/shell.php").read_bytes()
    token = (evidence / "notes/token.txt").read_bytes()
    hashes = (f"{hashlib.md5(shell).hexdigest().upper()}, not-a-hash\n"
              f"{hashlib.sha1(token).hexdigest()}; {'0' * 40}")
    result = collect("Generic.Search.HashHunter", {"Hashes": hashes,
                                                   "PathGlob": f"{evidence}/**"}).ok()
    assert {r["OSPath"]: r["MatchedOn"] for r in result.rows} == {
        str(evidence / "www/shell.php"): "MD5", str(evidence / "notes/token.txt"): "SHA1"}
    # Only the algorithms the list needs: no SHA256 here.
    assert [row["SHA256"] for row in result.rows] == [None, None]
    sha256 = collect("Generic.Search.HashHunter", {"Hashes": hashlib.sha256(token).hexdigest(),
                                                   "PathGlob": f"{evidence}/**"}).ok()
    assert sha256.column("OSPath") == [str(evidence / "notes/token.txt")]


def test_hash_hunter_without_hashes_says_so() -> None:
    result = collect("Generic.Search.HashHunter", {"Hashes": "none here"}).ok()
    assert result.rows == []


def test_file_collector_uploads_each_file_with_its_hashes(evidence: Path, tmp_path: Path) -> None:
    table = f"Glob\n{evidence}/www/*.php\n{evidence}/notes/token.txt\n"
    result, stored = collect_with_uploads(tmp_path / "uploads", "Generic.Collectors.File",
                                          {"CollectionGlobs": table})
    assert sorted(r["OSPath"] for r in result.rows) == sorted(
        str(evidence / name) for name in ("www/shell.php", "www/index.php", "notes/token.txt"))
    for row in result.rows:
        data = Path(row["OSPath"]).read_bytes()
        assert row["Upload"]["sha256"] == row["Hash"]["SHA256"] == \
            hashlib.sha256(data).hexdigest()
        assert data in stored
    listed = collect("Generic.Collectors.File", {"CollectionGlobs": table,
                                                 "UploadFiles": "N"}).ok()
    assert len(listed.rows) == 3 and listed.column("Upload") == [None] * 3


# This client --------------------------------------------------------------------------------------


def test_client_info_here() -> None:
    result = collect("Generic.Client.Info").ok()
    basic = [r for r, s in zip(result.rows, result.sources, strict=True)
             if s == "Generic.Client.Info/BasicInformation"]
    assert len(basic) == 1
    assert basic[0]["Hostname"] == socket.gethostname()
    assert basic[0]["OS"] == "linux"
    assert basic[0]["BootTime"] < datetime.now(UTC)
    users = [r["Name"] for r, s in zip(result.rows, result.sources, strict=True)
             if s == "Generic.Client.Info/Users"]
    assert "root" in users
    interfaces = [r["Name"] for r, s in zip(result.rows, result.sources, strict=True)
                  if s == "Generic.Client.Info/Interfaces"]
    assert "lo" in interfaces


# macOS and Windows, on fixture files ----------------------------------------------------------

LAUNCH_AGENT = """\
    <?xml version="1.0" encoding="UTF-8"?>
    <plist version="1.0">
    <dict>
      <key>Label</key>
      <string>com.update.helper</string>
      <key>ProgramArguments</key>
      <array>
        <string>/Users/eve/.local/bin/helper</string>
        <string>--connect</string>
        <string>203.0.113.5:443</string>
      </array>
      <key>RunAtLoad</key>
      <true/>
    </dict>
    </plist>
    """


def test_macos_launch_agents(tmp_path: Path) -> None:
    plist = write(tmp_path / "Users/eve/Library/LaunchAgents/com.update.helper.plist",
                  LAUNCH_AGENT)
    write(tmp_path / "Library/LaunchDaemons/com.vendor.daemon.plist", """\
        <plist version="1.0"><dict>
        <key>Label</key><string>com.vendor.daemon</string>
        <key>Program</key><string>/Library/Vendor/daemon</string>
        <key>KeepAlive</key><true/>
        </dict></plist>
        """)
    result = collect("MacOS.System.LaunchAgents", {"LaunchGlob": (
        f"{{{tmp_path}/Library/LaunchDaemons,{tmp_path}/Users/*/Library/LaunchAgents}}/*.plist")},
        anywhere=True).ok()
    helper = result.by("Label")["com.update.helper"]
    assert (helper["ProgramArguments"], helper["RunAtLoad"], helper["KeepAlive"],
            helper["User"], helper["SHA256"]) == (
        ["/Users/eve/.local/bin/helper", "--connect", "203.0.113.5:443"], True, False, "eve",
        hashlib.sha256(plist.read_bytes()).hexdigest())
    daemon = result.by("Label")["com.vendor.daemon"]
    assert (daemon["Program"], daemon["KeepAlive"], daemon["User"]) == \
        ("/Library/Vendor/daemon", True, "")


def test_macos_applications(tmp_path: Path) -> None:
    write(tmp_path / "Applications/Foo.app/Contents/Info.plist", """\
        <plist version="1.0"><dict>
        \t<key>CFBundleExecutable</key>
        \t<string>Foo</string>
        \t<key>CFBundleIdentifier</key>
        \t<string>com.example.foo</string>
        \t<key>CFBundleShortVersionString</key>
        \t<string>2.4.1</string>
        </dict></plist>
        """)
    result = collect("MacOS.Applications.List", {
        "InfoPlistGlob": f"{tmp_path}/Applications/*.app/Contents/Info.plist"},
        anywhere=True).ok()
    assert result.rows == [{
        "Name": "Foo", "Identifier": "com.example.foo", "Version": "2.4.1",
        "BuildVersion": None, "Executable": "Foo", "MinimumSystemVersion": None,
        "BundlePath": str(tmp_path / "Applications/Foo.app"),
        "Mtime": result.rows[0]["Mtime"]}]


def test_windows_startup_folders(tmp_path: Path) -> None:
    user = tmp_path / "Users/eve/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Startup"
    everyone = tmp_path / "ProgramData/Microsoft/Windows/Start Menu/Programs/StartUp"
    payload = write(user / "updater.exe", "MZ not really\n")
    write(user / "desktop.ini", "[.ShellClassInfo]\n")
    write(everyone / "vpn.lnk", "shortcut\n")
    result = collect("Windows.System.StartupFolders", {"StartupGlob": f"{{{user},{everyone}}}/*"},
                     anywhere=True).ok()
    assert {r["Name"]: r["User"] for r in result.rows} == {"updater.exe": "eve",
                                                           "vpn.lnk": "All Users"}
    assert result.by("Name")["updater.exe"]["Hash"]["SHA256"] == \
        hashlib.sha256(payload.read_bytes()).hexdigest()


def test_windows_hosts_file(tmp_path: Path) -> None:
    hosts = write(tmp_path / "hosts", "127.0.0.1 localhost\n0.0.0.0 update.av.example # off\n")
    result = collect("Windows.System.HostsFile", {"HostsFile": str(hosts)}, anywhere=True).ok()
    assert [(r["Address"], r["Hostnames"], r["Comment"]) for r in result.rows] == [
        ("127.0.0.1", ["localhost"], ""), ("0.0.0.0", ["update.av.example"], "off")]


@pytest.mark.parametrize("name", ["MacOS.System.LaunchAgents", "MacOS.Applications.List",
                                  "Windows.System.StartupFolders", "Windows.System.HostsFile"])
def test_other_systems_artifacts_find_nothing_on_linux(name: str) -> None:
    assert collect(name).ok().rows == []

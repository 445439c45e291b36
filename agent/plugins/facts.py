"""Simulated host facts for ``velotui-agent --simulate N`` and ``--facts FILE``.

Each simulated agent reports its own host facts in info() and its own labels in config, so a
demo fleet on one machine holds a believable mix of Windows, Linux and macOS hosts. The facts are
a pure function of (index, seed): a restarted demo fleet looks the same as before.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.json_file import read_json_file

LABEL_NAMES = ("Finance", "Engineering", "HR", "Servers", "Workstations", "Critical")
DOMAINS = ("corp.example.com", "prod.example.net", "lab.example.org")

# Facts are dated against a fixed moment rather than the clock, so they are reproducible.
REFERENCE_TIME = 1_735_689_600  # 2025-01-01T00:00:00Z

_WINDOWS_WORKSTATIONS = (
    ("Microsoft Windows 10 Enterprise", "10.0.19045 Build 19045"),
    ("Microsoft Windows 10 Pro", "10.0.19045 Build 19045"),
    ("Microsoft Windows 11 Enterprise", "10.0.22631 Build 22631"),
    ("Microsoft Windows 11 Pro", "10.0.22621 Build 22621"),
)
_WINDOWS_SERVERS = (
    ("Microsoft Windows Server 2016 Standard", "10.0.14393 Build 14393"),
    ("Microsoft Windows Server 2019 Datacenter", "10.0.17763 Build 17763"),
    ("Microsoft Windows Server 2022 Standard", "10.0.20348 Build 20348"),
)
# (Platform, PlatformFamily, PlatformVersion, kernel for amd64, kernel for arm64)
_LINUX_RELEASES = (
    ("ubuntu", "debian", "20.04", "5.4.0-182-generic", "5.4.0-182-generic"),
    ("ubuntu", "debian", "22.04", "5.15.0-113-generic", "5.15.0-113-generic"),
    ("ubuntu", "debian", "24.04", "6.8.0-41-generic", "6.8.0-41-generic"),
    ("debian", "debian", "11", "5.10.0-30-amd64", "5.10.0-30-arm64"),
    ("debian", "debian", "12", "6.1.0-23-amd64", "6.1.0-23-arm64"),
    ("rhel", "rhel", "8.9", "4.18.0-513.24.1.el8_9.x86_64", "4.18.0-513.24.1.el8_9.aarch64"),
    ("rocky", "rhel", "9.4", "5.14.0-427.13.1.el9_4.x86_64", "5.14.0-427.13.1.el9_4.aarch64"),
    ("amzn", "rhel", "2023", "6.1.97-104.177.amzn2023.x86_64",
     "6.1.97-104.177.amzn2023.aarch64"),
)
_MACOS_RELEASES = (("13.6.7", "22.6.0"), ("14.5", "23.5.0"), ("15.1", "24.1.0"))
_DEPARTMENTS = {"Finance": "FIN", "Engineering": "ENG", "HR": "HR"}
_SERVER_ROLES = ("web", "db", "app", "files", "mail", "build", "dc", "proxy")
_PEOPLE = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy")


def _machine_kind(rng: random.Random) -> tuple[str, bool]:
    os_name = rng.choices(("windows", "linux", "darwin"), weights=(50, 35, 15))[0]
    is_server = os_name != "darwin" and rng.random() < (0.25 if os_name == "windows" else 0.7)
    return os_name, is_server


def simulated_facts(index: int, seed: int = 0) -> dict[str, Any]:
    """Host facts for simulated agent ``index``: info() columns (Hostname, Fqdn, OS, Platform,
    PlatformFamily, PlatformVersion, KernelVersion, Architecture, HostID, BootTime, Uptime) and
    Labels. The same (index, seed) always gives the same facts."""
    # A string seed is hashed the same way in every process, unlike hash() of a tuple.
    rng = random.Random(f"velotui-simulated-host:{seed}:{index}")
    os_name, is_server = _machine_kind(rng)
    department = rng.choice(tuple(_DEPARTMENTS))
    labels = ["Servers" if is_server else "Workstations"]
    if not is_server or rng.random() < 0.3:
        labels.append(department)
    if is_server and rng.random() < 0.3:
        labels.append("Critical")

    if os_name == "windows":
        architecture = "arm64" if rng.random() < 0.03 else "amd64"
        releases = _WINDOWS_SERVERS if is_server else _WINDOWS_WORKSTATIONS
        platform_name, version = rng.choice(releases)
        family = "Server" if is_server else "Standalone Workstation"
        kernel = version
        if is_server:
            hostname = f"SRV-{rng.choice(_SERVER_ROLES).upper()}-{index:04d}"
        else:
            hostname = f"{_DEPARTMENTS[department]}-WKS-{index:04d}"
    elif os_name == "linux":
        architecture = "arm64" if rng.random() < 0.15 else "amd64"
        platform_name, family, version, amd64_kernel, arm64_kernel = rng.choice(_LINUX_RELEASES)
        kernel = arm64_kernel if architecture == "arm64" else amd64_kernel
        if is_server:
            hostname = f"{rng.choice(_SERVER_ROLES)}-{index:04d}"
        else:
            hostname = f"{rng.choice(_PEOPLE)}-laptop-{index:04d}"
    else:
        architecture = "arm64" if rng.random() < 0.7 else "amd64"
        platform_name, family = "darwin", "Standalone Workstation"
        version, kernel = rng.choice(_MACOS_RELEASES)
        hostname = f"{rng.choice(_PEOPLE)}-mbp-{index:04d}"

    uptime = rng.randint(300, (180 if is_server else 21) * 86_400)
    return {
        "Hostname": hostname,
        "Fqdn": f"{hostname}.{rng.choice(DOMAINS)}",
        "OS": os_name,
        "Platform": platform_name,
        "PlatformFamily": family,
        "PlatformVersion": version,
        "KernelVersion": kernel,
        "Architecture": architecture,
        "HostID": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "BootTime": REFERENCE_TIME - uptime,
        "Uptime": uptime,
        "Labels": labels,
    }


def load_facts_file(path: str | Path) -> list[dict[str, Any]]:
    """The entries of a facts file (a JSON list of objects of info() columns and ``Labels``).

    Raises ValueError naming the file and the problem when it cannot be read or is not such a
    list.
    """
    entries = read_json_file(path, "facts file")
    if not isinstance(entries, list):
        raise ValueError(
            f"facts file {path}: expected a JSON list of objects, found {type(entries).__name__}"
        )
    if not entries:
        raise ValueError(f"facts file {path}: the list is empty; give at least one host")
    for position, entry in enumerate(entries):
        where = f"facts file {path}: entry {position}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where} is {type(entry).__name__}, not an object")
        labels = entry.get("Labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise ValueError(f"{where}: Labels must be a list of strings")
        for column in ("Hostname", "Fqdn", "OS", "Platform", "Architecture"):
            if column in entry and not isinstance(entry[column], str):
                raise ValueError(f"{where}: {column} must be a string")
    return entries


def facts_for(index: int, facts_list: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """A copy of the facts entry for simulated agent ``index``: entry ``index`` modulo the
    list's length. Raises ValueError for an empty list."""
    if not facts_list:
        raise ValueError("no facts entries to choose from")
    entry = facts_list[index % len(facts_list)]
    return {key: list(value) if key == "Labels" else value for key, value in entry.items()}

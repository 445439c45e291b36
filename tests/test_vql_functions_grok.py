"""grok(), called through the engine as Velociraptor's syslog artifacts call it."""

from __future__ import annotations

from typing import Any

from tests.vql_evaluate import rows_and_errors

SSH_GROK = (
    "%{SYSLOGTIMESTAMP:Timestamp} (?:%{SYSLOGFACILITY} )?%{SYSLOGHOST:logsource} "
    "%{SYSLOGPROG}: %{DATA:event} %{DATA:method} for (invalid user )?%{DATA:user} from "
    "%{IPORHOST:ip} port %{NUMBER:port} ssh2(: %{GREEDYDATA:system.auth.ssh.signature})?"
)
SERVICE_GROK = (
    "%{NOTSPACE:Unit}%{SPACE}%{NOTSPACE:Load}%{SPACE}%{NOTSPACE:Active}%{SPACE}"
    "%{NOTSPACE:Sub}%{SPACE}%{GREEDYDATA:Description}"
)


async def rows_of(query: str, **env: Any) -> tuple[list[dict[str, Any]], list[str]]:
    return await rows_and_errors(query, env=env)


async def test_grok_parses_sshd_auth_lines_into_named_fields() -> None:
    lines = [
        "Nov 14 22:13:20 web1 sshd[1234]: Accepted publickey for alice from 10.0.0.5 "
        "port 52144 ssh2: RSA SHA256:abc",
        "Nov  4 02:01:09 web1 sshd[99]: Failed password for invalid user bob from "
        "2001:db8::7 port 22 ssh2",
        "Nov 14 22:13:21 web1 CRON[5]: pam_unix(cron:session): session opened",
    ]
    rows, errors = await rows_of(
        "SELECT grok(grok=G, data=_value) AS Event FROM foreach(row=Lines) "
        "WHERE Event.program = 'sshd'",
        G=SSH_GROK,
        Lines=lines,
    )
    assert errors == []
    first, second = (row["Event"] for row in rows)
    assert first["Timestamp"] == "Nov 14 22:13:20"
    assert (first["logsource"], first["program"], first["pid"]) == ("web1", "sshd", "1234")
    assert (first["event"], first["method"], first["user"]) == ("Accepted", "publickey", "alice")
    assert (first["ip"], first["port"]) == ("10.0.0.5", "52144")
    assert first["system.auth.ssh.signature"] == "RSA SHA256:abc"
    assert first["facility"] == ""  # an optional part that did not match
    assert second["Timestamp"] == "Nov  4 02:01:09"
    assert (second["event"], second["user"], second["ip"]) == ("Failed", "bob", "2001:db8::7")


async def test_grok_splits_systemctl_columns_as_linux_sys_services_does() -> None:
    rows, _ = await rows_of(
        "SELECT * FROM foreach(row={ SELECT grok(grok=G, data=L) AS Parsed FROM scope() }, "
        "column='Parsed')",
        G=SERVICE_GROK,
        L="ssh.service      loaded active running OpenBSD Secure Shell server",
    )
    assert rows == [
        {
            "Unit": "ssh.service",
            "Load": "loaded",
            "Active": "active",
            "Sub": "running",
            "Description": "OpenBSD Secure Shell server",
        }
    ]


async def test_grok_gives_null_for_a_line_that_does_not_match() -> None:
    rows, errors = await rows_of(
        "SELECT grok(grok='%{IPV4:ip} %{WORD:w}', data='no address here') AS E FROM scope()"
    )
    assert (rows, errors) == ([{"E": None}], [])


async def test_grok_with_extra_patterns_all_captures_and_timestamps() -> None:
    rows, _ = await rows_of(
        """SELECT grok(grok='%{ID:id} %{TIMESTAMP_ISO8601:when}', data=L,
                       patterns=dict(ID='[A-Z]{3}-[0-9]+')) AS A,
                  grok(grok='%{WORD} %{INT:n}', data='count 42', all_captures=TRUE) AS B,
                  grok(grok='%{HTTPDATE:t} (?P<rest>.*)', data='14/Nov/2023:22:13:20 +0000 ok')
                    AS C
           FROM scope()""",
        L="ABC-17 2023-11-14T22:13:20Z",
    )
    assert rows[0]["A"] == {"id": "ABC-17", "when": "2023-11-14T22:13:20Z"}
    assert rows[0]["B"] == {"WORD": "count", "n": "42"}
    assert rows[0]["C"] == {"t": "14/Nov/2023:22:13:20 +0000", "rest": "ok"}


async def test_grok_with_an_unknown_pattern_logs_and_gives_null() -> None:
    rows, errors = await rows_of("SELECT grok(grok='%{NOSUCH:x}', data='a') AS E FROM scope()")
    assert rows == [{"E": None}]
    assert errors and "grok()" in errors[0] and "NOSUCH" in errors[0]

"""The agent's config file, its state folder, and its pinned TLS context."""

from __future__ import annotations

import json
import os
import ssl
import stat
from pathlib import Path

import pytest

from agent.config import AgentConfig
from agent.state import AgentState, default_state_dir
from velotui.server.tls import create_certificate_authority
from velotui.wire.tls import pinned_client_ssl_context


@pytest.fixture(scope="module")
def ca_pem() -> str:
    certificate, _key = create_certificate_authority()
    return certificate.decode("ascii")


def write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_a_saved_config_loads_back_the_same_and_is_private(tmp_path: Path, ca_pem: str) -> None:
    config = AgentConfig(
        server_url="wss://127.0.0.1:8443/agent",
        ca_pem=ca_pem,
        enrolment_secret="s3cret",
        labels=["Finance", "Servers"],
        poll_interval=5.0,
        outbox_max_bytes=64 * 1024 * 1024,
    )
    path = tmp_path / "agent.json"
    config.save(path)

    assert AgentConfig.load(path) == config
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Saving again replaces the file whole.
    config.labels = ["HR"]
    config.save(path)
    assert AgentConfig.load(path).labels == ["HR"]
    assert [p.name for p in tmp_path.iterdir()] == ["agent.json"]


def test_the_server_may_hand_over_the_ca_as_bytes(ca_pem: str) -> None:
    config = AgentConfig("wss://h:1/agent", ca_pem.encode("ascii"), "s", ["L"])
    assert config.ca_pem == ca_pem
    assert (config.poll_interval, config.max_backoff) == (60.0, 60.0)
    assert config.outbox_max_bytes == 256 * 1024 * 1024


def test_a_url_without_a_path_connects_to_the_agent_endpoint(ca_pem: str) -> None:
    assert AgentConfig("wss://h:8443", ca_pem, "s").connect_url == "wss://h:8443/agent"
    assert AgentConfig("wss://h:8443/", ca_pem, "s").connect_url == "wss://h:8443/agent"
    assert AgentConfig("wss://h:8443/x/agent", ca_pem, "s").connect_url == "wss://h:8443/x/agent"


def test_unknown_keys_are_ignored_so_newer_configs_still_load(tmp_path: Path, ca_pem: str) -> None:
    path = write_json(
        tmp_path / "c.json",
        {"server_url": "wss://h/agent", "ca_pem": ca_pem, "enrolment_secret": "s", "new": 1},
    )
    assert AgentConfig.load(path).labels == []


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"server_url": "ws://h/agent"}, "wss://"),
        ({"server_url": "https://h/agent"}, "wss://"),
        ({"server_url": "wss:///agent"}, "no host"),
        ({"server_url": "wss://h:port/agent"}, "bad port"),
        ({"ca_pem": "not a certificate"}, "ca_pem"),
        ({"enrolment_secret": 7}, "enrolment_secret"),
        ({"labels": "Finance"}, "labels"),
        ({"labels": ["ok", 3]}, "labels"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": "soon"}, "poll_interval"),
        ({"max_backoff": -1}, "max_backoff"),
        ({"max_backoff": 0.1}, "max_backoff"),
        ({"outbox_max_bytes": 1000}, "outbox_max_bytes must be at least 4194304 bytes"),
        ({"outbox_max_bytes": "256M"}, "outbox_max_bytes must be a whole number"),
        ({"outbox_max_bytes": 1e9}, "outbox_max_bytes must be a whole number"),
    ],
)
def test_a_bad_field_is_named_with_the_file(
    tmp_path: Path, ca_pem: str, change: dict, complaint: str
) -> None:
    data = {"server_url": "wss://h/agent", "ca_pem": ca_pem, "enrolment_secret": "s"}
    data.update(change)
    path = write_json(tmp_path / "c.json", data)
    with pytest.raises(ValueError) as raised:
        AgentConfig.load(path)
    assert str(path) in str(raised.value)
    assert complaint in str(raised.value)


def test_missing_fields_unreadable_and_malformed_files_are_clear_errors(
    tmp_path: Path, ca_pem: str
) -> None:
    path = write_json(tmp_path / "c.json", {"server_url": "wss://h/agent"})
    with pytest.raises(ValueError, match="missing ca_pem, enrolment_secret"):
        AgentConfig.load(path)
    with pytest.raises(ValueError, match="cannot read it"):
        AgentConfig.load(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"not valid JSON .* line 1"):
        AgentConfig.load(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="expected a JSON object"):
        AgentConfig.load(write_json(tmp_path / "list.json", [1]))


def test_the_pinned_context_trusts_only_the_given_ca_and_checks_names(ca_pem: str) -> None:
    context = pinned_client_ssl_context(ca_pem)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert len(context.get_ca_certs()) == 1
    with pytest.raises(ValueError):
        pinned_client_ssl_context(
            "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"
        )


def test_the_state_folder_keeps_the_identity_and_the_newest_hunt_checkpoint(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "state"
    state = AgentState.open(folder)
    assert state.last_hunt_timestamp == 0
    assert (folder / "agent.key").exists()

    assert state.record_hunt_checkpoint(1_700_000_000)
    assert not state.record_hunt_checkpoint(1_600_000_000)  # never moves back
    assert state.last_hunt_timestamp == 1_700_000_000

    again = AgentState.open(folder)
    assert again.last_hunt_timestamp == 1_700_000_000
    assert again.identity.client_id == state.identity.client_id
    assert json.loads(again.state_file.read_text()) == {"last_hunt_timestamp": 1_700_000_000}


@pytest.mark.parametrize("text", ["{half", '{"last_hunt_timestamp": "soon"}', "[]"])
def test_a_damaged_state_file_starts_from_no_checkpoint(tmp_path: Path, text: str) -> None:
    AgentState.open(tmp_path)
    (tmp_path / "state.json").write_text(text, encoding="utf-8")
    state = AgentState.open(tmp_path)
    assert state.last_hunt_timestamp == 0
    assert state.record_hunt_checkpoint(5)
    assert AgentState.open(tmp_path).last_hunt_timestamp == 5


@pytest.mark.skipif(os.name != "posix" or os.uname().sysname == "Darwin", reason="XDG layout")
def test_the_default_state_folder_follows_xdg_data_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / "velotui-agent"
    monkeypatch.setenv("XDG_DATA_HOME", "relative/path")  # invalid per the spec: ignored
    assert default_state_dir() == Path.home() / ".local" / "share" / "velotui-agent"

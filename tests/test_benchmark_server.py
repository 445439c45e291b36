"""The server benchmark runs end to end on a small fleet (real server, real agent processes, real
bare connections) and ends with its JSON line, every figure there and a number. Its timings are
not checked: benchmarks measure, tests do not time things."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES = (
    "agents", "hunt_seconds", "roundtrip_seconds", "hunt_vs_roundtrip",
    "hunt_seconds_server_condition", "hunt_vs_roundtrip_server_condition", "ingest_rows_per_s",
    "sqlite_rows_per_s", "ingest_vs_sqlite", "sqlite_blob_rows_per_s", "ingest_vs_sqlite_blobs",
    "kb_per_agent", "bare_kb_per_connection",
    "memory_ratio", "kb_per_agent_churn", "bare_kb_per_connection_churn", "memory_ratio_churn",
    "reconnect_seconds", "bare_connect_seconds", "reconnect_vs_bare", "server_peak_rss_mb",
)


@pytest.mark.slow
def test_the_server_benchmark_reports_every_figure_as_a_number(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.server", "--agents", "20", "--settle", "0.2",
         "--churn-seconds", "2", "--ingest-clients", "10", "--ingest-rows", "100",
         "--session-age", "0"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    for name in FIGURES:
        value = figures.get(name)
        assert isinstance(value, int | float) and not isinstance(value, bool), (name, value)
        assert math.isfinite(value), (name, value)
    assert figures["agents"] == 20
    assert figures["errors"] == 0 and figures["not_matched"] == 0
    assert figures["ingest_rows"] == 10 * 100
    assert set(figures["targets"]) >= {"hunt_vs_roundtrip", "ingest_vs_sqlite", "memory_ratio",
                                       "memory_ratio_churn", "reconnect_vs_bare"}
    # Everything it started is gone: no process of its own and no folder left behind.
    assert not list(tmp_path.glob("velotui-bench-*"))


@pytest.mark.slow
def test_the_frontends_benchmark_compares_postgresql_frontends_with_sqlite(
        tmp_path: Path, postgres_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.server", "--database", postgres_url,
         "--frontends", "2", "--agents", "20", "--ingest-clients", "6", "--ingest-rows", "50"],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "TMPDIR": str(tmp_path)},
    )
    assert result.returncode == 0, result.stderr[-4000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    sqlite, postgresql = figures["sqlite_1"], figures["postgresql_2"]
    assert sum(sqlite["agents_per_frontend"]) == sum(postgresql["agents_per_frontend"]) == 20
    assert len(postgresql["agents_per_frontend"]) == 2
    for side in (sqlite, postgresql):
        assert side["hunt_seconds"] > 0 and side["ingest_rows_per_s"] > 0
    assert set(figures["ratios"]) == {"hunt_seconds", "ingest_rows_per_s"}
    assert not list(tmp_path.glob("velotui-bench-*"))


def test_the_frontends_benchmark_needs_a_postgresql_database() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.server", "--frontends", "2", "--agents", "20"],
        cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--database postgresql://" in result.stderr

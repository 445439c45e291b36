"""What streaming a hunt's zip to the operator costs, against baselines from the same run.

    python -m benchmarks.export [--megabytes 50] [--agents 5]

1. Starts a server in this process on a fresh datastore and ``velotui-agent --simulate N`` in
   another; hunts ``upload()`` of one file of random bytes (MEGABYTES / N each, so the zip is
   about MEGABYTES and does not compress), through the real ingest path.
2. ``build``: the zip written to a file on the server (``export_hunt``), the baseline.
3. ``cli``: ``velotui hunt export --server URL --token-file F -o FILE`` in its own process,
   against this server: the whole path, chunks as binary frames over TLS, checked and renamed.
   ``cli_baseline``: the same command line's start-up, connection and one call (``hunt show``).
4. ``transport``: the built zip sent over a TLS websocket to a receiving process, once as binary
   frames (this API's framing) and once as base64 in JSON, for a few chunk sizes: the receiver's
   time from connecting to the last frame (median of TRANSPORT_RUNS), wire bytes, CPU of sender
   and receiver.
5. ``slow reader``: the export read by a process that takes at most SLOW_MB_PER_S; the growth of
   this (the server's) process's resident memory meanwhile, against the zip's size.

It prints one line per figure and ends with one JSON line. Everything it started is gone when it
returns.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from benchmarks.harness import (
    cpu_seconds,
    hunt_on_simulated_fleet,
    kill_now,
    say,
    settled_rss_bytes,
)
from velotui.server.datastore import Datastore
from velotui.server.exports import CHUNK_BYTES, export_hunt
from velotui.server.operator_api import decode_binary_event, encode_binary_event
from velotui.server.server import Server
from velotui.server.tls import server_ssl_context
from velotui.wire.tls import pinned_client_ssl_context

SLOW_MB_PER_S = 10.0
CHUNK_SIZES = (64 * 1024, CHUNK_BYTES, 1024 * 1024)
TRANSPORT_RUNS = 3


# The receiving side, in its own process --------------------------------------------------------


async def _receive(url: str, ca_pem: str, mode: str) -> dict[str, Any]:
    """Read every frame the sender sends, decode it as ``mode`` says, hash the data."""
    digest = hashlib.sha256()
    received = wire = 0
    began = time.perf_counter()
    cpu_began = time.process_time()
    async with connect(
        url, ssl=pinned_client_ssl_context(ca_pem), max_size=64 * 1024 * 1024, compression=None,
    ) as connection:
        async for frame in connection:
            wire += len(frame)
            if mode == "binary":
                data = decode_binary_event(frame)["event"]["data"]
            else:
                data = base64.b64decode(json.loads(frame)["event"]["data"])
            digest.update(data)
            received += len(data)
    return {"bytes": received, "wire": wire, "sha256": digest.hexdigest(),
            "seconds": time.perf_counter() - began, "cpu": time.process_time() - cpu_began}


async def _slow_export(url: str, token: str, ca_pem: str, hunt_id: str, rate: float) -> dict:
    """Take the export no faster than ``rate`` bytes a second."""
    from velotui.server.remote import RemoteService

    received = 0
    began = time.perf_counter()
    async with await RemoteService.connect(url, token, ca_pem) as remote:
        async for event in remote.export_hunt(hunt_id=hunt_id):
            if event.get("event") == "chunk":
                received += len(event["data"])
                ahead = received / rate - (time.perf_counter() - began)
                if ahead > 0:
                    await asyncio.sleep(ahead)
    return {"bytes": received, "seconds": time.perf_counter() - began}


# The sending side ------------------------------------------------------------------------------


async def transport_run(datastore: Datastore, zip_path: Path, mode: str, chunk: int
                        ) -> dict[str, Any]:
    """Send ``zip_path`` in ``chunk``-byte events framed as ``mode`` to a receiving process."""
    data = zip_path.read_bytes()
    done = asyncio.Event()
    sender_cpu = 0.0

    async def send(connection: ServerConnection) -> None:
        nonlocal sender_cpu
        cpu_began = time.process_time()
        for offset in range(0, len(data), chunk):
            event = {"event": "chunk", "offset": offset, "data": data[offset:offset + chunk]}
            if mode == "binary":
                await connection.send(encode_binary_event(1, event))
            else:
                text = base64.b64encode(event["data"]).decode("ascii")
                await connection.send(json.dumps({"id": 1, "event": {**event, "data": text}},
                                                 separators=(",", ":")))
        sender_cpu = time.process_time() - cpu_began
        await connection.close()
        done.set()

    context = server_ssl_context(datastore.server_cert_path, datastore.server_key_path)
    async with serve(send, "127.0.0.1", 0, ssl=context, compression=None) as listener:
        port = listener.sockets[0].getsockname()[1]
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.export", "receive",
            f"wss://127.0.0.1:{port}", str(datastore.ca_cert_path), mode,
            stdout=subprocess.PIPE,
        )
        output, _ = await child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"the receiving process failed ({child.returncode})")
        await asyncio.wait_for(done.wait(), 60)
    result = json.loads(output)
    if result["bytes"] != len(data) or result["sha256"] != hashlib.sha256(data).hexdigest():
        raise RuntimeError(f"{mode}: the receiver got something else")
    # The receiver's clock: from its connection to the last frame, without its start-up.
    seconds = result["seconds"]
    return {"mode": mode, "chunk": chunk, "seconds": round(seconds, 3),
            "mb_per_s": round(len(data) / seconds / 1e6, 1),
            "wire_overhead": round(result["wire"] / len(data) - 1, 4),
            "sender_cpu": round(sender_cpu, 3), "receiver_cpu": round(result["cpu"], 3)}


async def make_hunt(server: Server, folder: Path, megabytes: int, agents: int,
                    children: list[subprocess.Popen[bytes]]) -> str:
    """A finished hunt whose clients each uploaded ``megabytes / agents`` random bytes."""
    source = folder / "random.bin"
    source.write_bytes(os.urandom(megabytes * 1_000_000 // agents))
    query = f"SELECT upload(file='{source}') AS Upload FROM scope()"
    return await hunt_on_simulated_fleet(server, folder, agents, children, "the upload hunt",
                                         query=query)


async def run(megabytes: int, agents: int, folder: Path,
              children: list[subprocess.Popen[bytes]]) -> dict[str, Any]:
    figures: dict[str, Any] = {"megabytes": megabytes, "agents": agents}
    datastore = Datastore.open(folder / "datastore")
    server = Server(datastore, "127.0.0.1:0")
    await server.start()
    me = psutil.Process()
    try:
        say(f"server on {server.url}; uploading {megabytes} MB from {agents} agents")
        hunt_id = await make_hunt(server, folder, megabytes, agents, children)

        built = folder / "built.zip"
        began = time.perf_counter()
        result = await export_hunt(server.db, server.upload_store, hunt_id, built)
        seconds = time.perf_counter() - began
        figures["zip_bytes"] = result.bytes
        figures["build"] = {"seconds": round(seconds, 3),
                            "mb_per_s": round(result.bytes / seconds / 1e6, 1)}
        say(f"build to a file on the server: {result.bytes / 1e6:.1f} MB in {seconds:.2f} s")

        began = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "velotui"), "hunt", "show", hunt_id,
            "--server", server.url, "--token-file", str(datastore.api_token_path),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        await child.wait()
        figures["cli_baseline_seconds"] = round(time.perf_counter() - began, 3)
        say(f"velotui hunt show --server (start-up, connect, one call): "
            f"{figures['cli_baseline_seconds']:.2f} s")

        out = folder / "cli.zip"
        cpu_began = cpu_seconds(me)
        began = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "velotui"), "hunt", "export", hunt_id,
            "--server", server.url, "--token-file", str(datastore.api_token_path),
            "-o", str(out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        stdout, stderr = await child.communicate()
        seconds = time.perf_counter() - began
        if child.returncode != 0:
            raise RuntimeError(f"velotui hunt export failed: {stderr.decode().strip()}")
        figures["cli"] = {"seconds": round(seconds, 3),
                          "mb_per_s": round(out.stat().st_size / seconds / 1e6, 1),
                          "server_cpu": round(cpu_seconds(me) - cpu_began, 3)}
        say(f"velotui hunt export --server (another process): {seconds:.2f} s;"
            f" {stdout.decode().strip()}")

        figures["transport"] = []
        for chunk in CHUNK_SIZES:
            for mode in ("binary", "base64"):
                # The median of a few runs: the machine is shared and noisy.
                runs = [await transport_run(datastore, built, mode, chunk)
                        for _ in range(TRANSPORT_RUNS)]
                run_figures = sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]
                figures["transport"].append(run_figures)
                say(f"transport {mode:6} chunk {chunk // 1024:5} KiB:"
                    f" {run_figures['mb_per_s']:6.1f} MB/s, wire +"
                    f"{run_figures['wire_overhead'] * 100:.1f} %, sender CPU"
                    f" {run_figures['sender_cpu']:.2f} s, receiver CPU"
                    f" {run_figures['receiver_cpu']:.2f} s")

        rss_before = settled_rss_bytes()
        peak = rss_before
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.export", "slow", server.url,
            str(datastore.api_token_path), str(datastore.ca_cert_path), hunt_id,
            str(SLOW_MB_PER_S), stdout=subprocess.PIPE,
        )
        reading = asyncio.ensure_future(child.communicate())
        while not reading.done():
            peak = max(peak, me.memory_info().rss)
            await asyncio.wait({reading}, timeout=0.05)
        slow = json.loads(reading.result()[0])
        figures["slow_reader"] = {"mb_per_s": SLOW_MB_PER_S, "seconds": round(slow["seconds"], 1),
                                  "server_rss_growth_mb": round((peak - rss_before) / 1e6, 1)}
        say(f"slow reader ({SLOW_MB_PER_S:g} MB/s, {slow['seconds']:.1f} s): the server's"
            f" resident memory grew {(peak - rss_before) / 1e6:.1f} MB at most, for a"
            f" {result.bytes / 1e6:.1f} MB zip")
    finally:
        await server.stop()
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export")
    sub = parser.add_subparsers(dest="command")
    receive = sub.add_parser("receive")
    receive.add_argument("url")
    receive.add_argument("ca_file", type=Path)
    receive.add_argument("mode", choices=("binary", "base64"))
    slow = sub.add_parser("slow")
    slow.add_argument("url")
    slow.add_argument("token_file", type=Path)
    slow.add_argument("ca_file", type=Path)
    slow.add_argument("hunt_id")
    slow.add_argument("mb_per_s", type=float)
    parser.add_argument("--megabytes", type=int, default=50)
    parser.add_argument("--agents", type=int, default=5)
    options = parser.parse_args(argv)
    if options.command == "receive":
        print(json.dumps(asyncio.run(_receive(options.url, options.ca_file.read_text(),
                                              options.mode))))
        return 0
    if options.command == "slow":
        print(json.dumps(asyncio.run(_slow_export(
            options.url, options.token_file.read_text().strip(), options.ca_file.read_text(),
            options.hunt_id, options.mb_per_s * 1e6))))
        return 0
    children: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="velotui-bench-export-") as folder:
        try:
            figures = asyncio.run(run(options.megabytes, options.agents, Path(folder), children))
        finally:
            for child in children:
                with contextlib.suppress(Exception):
                    kill_now(child)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())

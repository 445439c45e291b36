"""``velotui-agent``: run one agent, or a simulated fleet of them, until told to stop.

    velotui-agent --config FILE [--server URL]... [--state DIR] [--simulate N] [--facts FILE]
                  [--verbose]

``--simulate N`` runs N agents in this process, each with its own key and state under
``<state>/sim-0000``, ``sim-0001``..., its own connection and simulated host facts; everything
they run is real. SIGTERM and SIGINT close the connections and exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import signal
import ssl
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.frame_trace import FrameTrace
from agent.outbox import Outbox
from agent.plugins.facts import facts_for, load_facts_file, simulated_facts
from agent.session import AgentSession
from agent.state import AgentState, default_state_dir
from velotui.runtime import tune_for_many_connections
from velotui.wire.tls import pinned_client_ssl_context

# Simulated agents start spread over up to this many seconds, so a restarted fleet does not
# reach the server in one burst.
MAX_START_SPREAD = 2.0
START_SPREAD_PER_AGENT = 0.01

log = logging.getLogger("agent")


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``velotui-agent``."""
    parser = argparse.ArgumentParser(
        prog="velotui-agent",
        description="The velotui endpoint agent: connects to the server and runs its collections.",
    )
    parser.add_argument(
        "--config", required=True, metavar="FILE", help="the agent config the server wrote"
    )
    parser.add_argument(
        "--server",
        action="append",
        metavar="URL",
        help="a server to use instead of the config's (repeatable: the agent starts at a random "
        "one and fails over to the others)",
    )
    parser.add_argument(
        "--state",
        metavar="DIR",
        help=f"the state folder (key, hunt checkpoint, outbox); default {default_state_dir()}",
    )
    parser.add_argument(
        "--simulate",
        type=_positive_int,
        metavar="N",
        help="run N agents in this process, each with its own identity and simulated host facts",
    )
    parser.add_argument(
        "--facts",
        metavar="FILE",
        help="a JSON list of host facts (info() columns and Labels); agent i takes entry i "
        "modulo its length",
    )
    parser.add_argument(
        "--trace-frames",
        metavar="FILE",
        help="append every message received from the server to FILE, one JSON line each",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="log connections and flows (twice: debug detail)",
    )
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent(s) until SIGTERM or SIGINT; return the exit status.

    0 after a clean stop; 1 when no agent could start (its state folder unusable); 2 for a bad
    config or facts file.
    """
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.verbose < 2:
        # The websocket library's own chatter says nothing the session does not say better.
        logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        config = AgentConfig.load(args.config)
        if args.server:
            config = dataclasses.replace(config, server_url="", server_urls=args.server)
        ssl_context = pinned_client_ssl_context(config.ca_pem)
        facts_list = load_facts_file(args.facts) if args.facts else None
    except ValueError as error:
        print(f"velotui-agent: {error}", file=sys.stderr)
        return 2
    state_root = Path(args.state).expanduser() if args.state else default_state_dir()
    agents = _agent_plans(state_root, args.simulate, facts_list)
    if args.simulate:
        tune_for_many_connections()
    try:
        trace = FrameTrace(Path(args.trace_frames)) if args.trace_frames else None
    except OSError as error:
        print(f"velotui-agent: cannot write the trace: {error}", file=sys.stderr)
        return 2
    try:
        # Simulated agents keep their outboxes in memory: ten thousand files open at once would
        # exhaust the process's file descriptors.
        return asyncio.run(
            _run_agents(config, ssl_context, agents, outbox_on_disk=not args.simulate,
                        frame_trace=trace)
        )
    except KeyboardInterrupt:  # where signal handlers cannot be installed (Windows)
        return 0


def _agent_plans(
    state_root: Path, simulate: int | None, facts_list: list[dict[str, Any]] | None
) -> list[tuple[str, Path, Mapping[str, Any] | None]]:
    """(name, state folder, simulated facts) for each agent to run."""
    if simulate is None:
        facts = facts_for(0, facts_list) if facts_list else None
        return [("agent", state_root, facts)]
    return [
        (
            f"sim-{index:04d}",
            state_root / f"sim-{index:04d}",
            facts_for(index, facts_list) if facts_list else simulated_facts(index),
        )
        for index in range(simulate)
    ]


async def _run_agents(
    config: AgentConfig,
    ssl_context: ssl.SSLContext,
    agents: list[tuple[str, Path, Mapping[str, Any] | None]],
    outbox_on_disk: bool = True,
    frame_trace: FrameTrace | None = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal_number, stop.set)
    spread = min(MAX_START_SPREAD, START_SPREAD_PER_AGENT * len(agents))
    tasks = [
        asyncio.create_task(
            _run_agent(
                config,
                ssl_context,
                name,
                folder,
                facts,
                spread * index / len(agents),
                outbox_on_disk,
                frame_trace,
            ),
            name=name,
        )
        for index, (name, folder, facts) in enumerate(agents)
    ]
    stopper = asyncio.create_task(stop.wait())
    try:
        # Agents run until stopped; one that ends by itself could not start.
        pending = set(tasks)
        while pending and not stop.is_set():
            _, pending = await asyncio.wait(
                pending | {stopper}, return_when=asyncio.FIRST_COMPLETED
            )
            pending.discard(stopper)
    finally:
        stopper.cancel()
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    for task, result in zip(tasks, results, strict=True):
        if isinstance(result, Exception):
            log.error("%s: stopped by an unexpected error", task.get_name(), exc_info=result)
    return 0 if stop.is_set() else 1


async def _run_agent(
    config: AgentConfig,
    ssl_context: ssl.SSLContext,
    name: str,
    folder: Path,
    facts: Mapping[str, Any] | None,
    start_delay: float,
    outbox_on_disk: bool,
    frame_trace: FrameTrace | None = None,
) -> None:
    """Run one agent until cancelled; return early when its state folder cannot be used."""
    await asyncio.sleep(start_delay)
    try:
        state = await asyncio.to_thread(AgentState.open, folder)
        outbox = await asyncio.to_thread(
            Outbox.open,
            state.outbox_file if outbox_on_disk else None,
            config.outbox_max_bytes,
        )
    except (OSError, ValueError) as error:
        log.error("%s: cannot use the state folder %s: %s", name, folder, error)
        return
    session = AgentSession(
        config,
        state,
        facts=facts,
        name=f"{name} {state.identity.client_id}",
        ssl_context=ssl_context,
        outbox=outbox,
        frame_trace=frame_trace,
    )
    log.info("%s: %s starts, state in %s", name, state.identity.client_id, folder)
    await session.run_forever()


if __name__ == "__main__":
    sys.exit(main())

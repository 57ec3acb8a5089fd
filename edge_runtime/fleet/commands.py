"""The fleet commands of ``edge-runtime``: ``agent`` (the agent process) and ``sync --once`` (one sync pass).

Kept beside the fleet code they drive; :mod:`edge_runtime.cli` lists them with the other commands.
Heavy modules are imported inside the handlers, so ``edge-runtime --help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, TextIO, Tuple

from edge_runtime.command_line import Handler
from edge_runtime.errors import ConfigError
from edge_runtime.fleet.errors import UpdatesNotPromotedError

if TYPE_CHECKING:
    from edge_runtime.fleet.sync import SyncOutcome
    from edge_runtime.fleet.sync_config import SyncSettings


def _agent_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, type=Path, metavar="FILE", help="agent settings YAML")


def _agent(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from edge_runtime.fleet import agent
    from edge_runtime.fleet.agent_config import load_agent_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return agent.run(load_agent_settings(args.config))


def _sync_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", required=True,
                        help="one pass: refresh the TUF metadata, take each newer bundle for this device through "
                             "download, install and health gate, then exit")
    parser.add_argument("--config", required=True, type=Path, metavar="FILE",
                        help="agent settings YAML with a 'sync' block")


def _sync(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from edge_runtime.fleet import sync_pass
    from edge_runtime.fleet.sync import PROMOTED
    from edge_runtime.fleet.sync_config import load_sync_settings

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_sync_settings(args.config)
    outcomes = sync_pass.run_once(settings)
    _report_pass(args.config, settings, outcomes)
    for outcome in outcomes:
        print(outcome.line(), file=out)
    bad = [o for o in outcomes if o.status != PROMOTED]
    if bad:
        raise UpdatesNotPromotedError(f"{len(bad)} of {len(outcomes)} update(s) not promoted; first: {bad[0].line()}")
    if not outcomes:
        print("up to date: no newer bundle for this device", file=out)
    return 0


def _report_pass(config: Path, settings: SyncSettings, outcomes: List[SyncOutcome]) -> None:
    """Queue the pass's sync reports and send the queue once (kept when the server is down or not configured)."""
    import logging

    from edge_runtime.fleet.agent_config import load_agent_settings
    from edge_runtime.fleet.sync_loop import report_once

    try:
        agent = load_agent_settings(config)
    except ConfigError as exc:  # a sync-only file: the reports wait for an agent that can send them
        logging.getLogger(__name__).warning("sync reports queued, not sent: %s", exc)
        agent = None
    report_once(agent, settings, outcomes)


FLEET_COMMANDS: Dict[str, Tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {
    "agent": (_agent_arguments, _agent, "upload the telemetry spool to the central fleet server and sync models "
                                        "(the agent process)"),
    "sync": (_sync_arguments, _sync, "pull, verify, install and health-gate newer bundles for this device "
                                     "(--once: one pass)"),
}

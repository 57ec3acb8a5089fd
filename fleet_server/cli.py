"""The ``edge-fleet`` command: the central server's operator tool.

    edge-fleet serve [--host 127.0.0.1] [--port 8080] [--workers N] [--threads N] [--tls-cert F --tls-key F]
    edge-fleet migrate                        bring the database to the newest schema (alembic upgrade head)
    edge-fleet enroll DEVICE_ID [--device-class C]   enroll a device; prints its token once
    edge-fleet operator-token create NAME     prints a new operator token once
    edge-fleet operator-token revoke NAME
    edge-fleet retention                      roll up and delete old telemetry now
    edge-fleet tuf-init | tuf-refresh | publish | rollout ...   over-the-air updates (fleet_server.cli_rollouts)

Every command takes ``--config FILE`` (settings YAML; default: built-in settings, paths relative to
the working directory) and ``--debug``. A user's error is one line, ``edge-fleet: error: ...``, exit
status 1; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, List, Optional, TextIO, Tuple, TypeVar

from edge_runtime.command_line import Handler, run_command
from edge_runtime.errors import ConfigError
from fleet_server.cli_rollouts import COMMANDS as OTA_COMMANDS

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from fleet_server.settings import FleetSettings

PROG = "edge-fleet"
T = TypeVar("T")


def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand; return the process exit status."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, args.handler, args, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, metavar="FILE", help="settings YAML (default: built-in settings)")
    common.add_argument("--debug", action="store_true", help="show tracebacks")
    parser = argparse.ArgumentParser(prog=PROG, description="Central fleet server for edge-runtime devices.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, (add_arguments, handler, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, parents=[common])
        add_arguments(sub)
        if handler is not None:
            sub.set_defaults(handler=handler)
    return parser


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default: 8080; 0 picks a free one)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default: 2)")
    parser.add_argument("--threads", type=int, default=8, help="threads per worker (default: 8)")
    parser.add_argument("--tls-cert", type=Path, metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", type=Path, metavar="FILE", help="the certificate's private key (PEM)")
    parser.add_argument("--allow-plain-http", action="store_true",
                        help="serve plain HTTP on a non-loopback address (TLS ends at a load balancer in front)")


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.gunicorn_app import ServeOptions, serve

    if (args.tls_cert is None) != (args.tls_key is None):
        raise ConfigError("give both --tls-cert and --tls-key, or neither")
    if args.workers < 1 or args.threads < 1 or not 0 <= args.port < 65536:
        raise ConfigError("--workers and --threads must be at least 1, --port 0..65535")
    if args.tls_cert is None and args.host not in ("127.0.0.1", "localhost", "::1") and not args.allow_plain_http:
        raise ConfigError(f"refusing plain HTTP on {args.host}: give --tls-cert/--tls-key "
                          "(or --allow-plain-http when a TLS load balancer is in front)")
    for path in (args.tls_cert, args.tls_key):
        if path is not None and not path.is_file():
            raise ConfigError(f"{path}: no such file")
    options = ServeOptions(host=args.host, port=args.port, workers=args.workers, threads=args.threads,
                           tls_cert=args.tls_cert, tls_key=args.tls_key)
    return serve(_settings(args), options, out)


def _migrate(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.db import make_engine
    from fleet_server.schema import upgrade_to_head

    engine = make_engine(_settings(args))
    try:
        print(f"database at revision {upgrade_to_head(engine)}", file=out)
    finally:
        engine.dispose()
    return 0


def _enroll_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("device_id", metavar="DEVICE_ID")
    parser.add_argument("--device-class", metavar="C", help="the device's class (what rollouts target)")


def _enroll(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.batch import DEVICE_ID
    from fleet_server.director import assign_enrolled
    from fleet_server.tokens import enroll_device

    for what, value in (("DEVICE_ID", args.device_id), ("--device-class", args.device_class)):
        if value is not None and not DEVICE_ID.match(value):
            raise ConfigError(f"{what}: expected 1-128 letters, digits, '.', '_', ':' or '-'")

    def work(connection: Connection, secret: bytes) -> str:
        token = enroll_device(connection, secret, args.device_id, time.time(), args.device_class)
        assign_enrolled(connection, _settings(args), args.device_id, args.device_class)
        return token

    token = _with_secret(args, work)
    print(f"{PROG}: enrolled {args.device_id}; its token (shown once) follows", file=sys.stderr)
    print(token, file=out)
    return 0


def _operator_token_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("create", "revoke"))
    parser.add_argument("name", metavar="NAME")


def _operator_token(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.tokens import create_operator_token, revoke_operator_tokens

    if args.action == "create":
        token = _with_secret(args, lambda c, secret: create_operator_token(c, secret, args.name, time.time()))
        print(f"{PROG}: operator token {args.name!r} (shown once) follows", file=sys.stderr)
        print(token, file=out)
        return 0
    count = _with_secret(args, lambda c, _secret: revoke_operator_tokens(c, args.name, time.time()))
    if count == 0:
        raise ConfigError(f"no live operator token named {args.name!r}")
    print(f"revoked {count} operator token(s) named {args.name!r}", file=out)
    return 0


def _retention(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.db import make_engine
    from fleet_server.retention import run_retention
    from fleet_server.schema import require_current

    settings = _settings(args)
    engine = make_engine(settings)
    try:
        require_current(engine)
        report = run_retention(engine, settings, time.time())
    finally:
        engine.dispose()
    print(f"rolled up {report.samples_rolled_up} samples into minutes, {report.minutes_rolled_up} minutes into "
          f"hours; deleted {report.hours_deleted} hours", file=out)
    return 0


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


def _settings(args: argparse.Namespace) -> FleetSettings:
    from fleet_server.settings import load_fleet_settings

    return load_fleet_settings(args.config)


def _with_secret(args: argparse.Namespace, work: Callable[[Connection, bytes], T]) -> T:
    """Run ``work(connection, secret)`` in one write transaction on a migrated database."""
    from fleet_server.db import begin_write, database_errors, make_engine
    from fleet_server.schema import require_current
    from fleet_server.tokens import load_or_create_secret

    settings = _settings(args)
    secret = load_or_create_secret(settings.resolve(settings.secret_file))
    engine = make_engine(settings)
    try:
        require_current(engine)
        with database_errors(), engine.connect() as connection:
            begin_write(connection, settings.is_sqlite)
            result = work(connection, secret)
            connection.commit()
    finally:
        engine.dispose()
    return result


_COMMANDS: Dict[str, Tuple[Callable[[argparse.ArgumentParser], None], Optional[Handler], str]] = {
    "serve": (_serve_arguments, _serve, "run the HTTP server (gunicorn; stateless: scale out with instances)"),
    "migrate": (_no_arguments, _migrate, "bring the database schema to the newest revision"),
    "enroll": (_enroll_arguments, _enroll, "enroll a device and print its token once"),
    "operator-token": (_operator_token_arguments, _operator_token, "create or revoke an operator token"),
    "retention": (_no_arguments, _retention, "roll up and delete old telemetry now"),
    **OTA_COMMANDS,
}

if __name__ == "__main__":
    sys.exit(main())

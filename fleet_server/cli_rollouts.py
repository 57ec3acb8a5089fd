"""The over-the-air commands of ``edge-fleet`` (wired into :mod:`fleet_server.cli`).

    edge-fleet tuf-init --root-keys-dir DIR   create the TUF repository; the root key goes to DIR (move it offline)
    edge-fleet tuf-refresh                    re-sign the timestamp (and what nears expiry): run it from a timer
    edge-fleet tuf-rotate ROLE... --root-keys-dir DIR [--new-root-keys-dir DIR2]   new keys, root N+1 (tuf_keys)
    edge-fleet publish PATH                   publish a signed bundle (directory or tar)
    edge-fleet rollout create MODEL VERSION --device-class C [--canary DEV ...] [--percent N]
    edge-fleet rollout advance ID PERCENT | pause ID [--reason R] | resume ID | cancel ID | list | show ID
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, Optional, TextIO, Tuple

from edge_runtime.errors import ConfigError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from fleet_server.settings import FleetSettings

Handler = Callable[[argparse.Namespace, TextIO], int]
SettingsLoader = Callable[[argparse.Namespace], "FleetSettings"]


def _settings(args: argparse.Namespace) -> FleetSettings:
    from fleet_server.settings import load_fleet_settings

    return load_fleet_settings(args.config)


@contextlib.contextmanager
def _engine(settings: FleetSettings) -> Iterator[Engine]:
    """An engine on a database at the current schema revision, disposed afterwards."""
    from fleet_server.db import make_engine
    from fleet_server.schema import require_current

    engine = make_engine(settings)
    try:
        require_current(engine)
        yield engine
    finally:
        engine.dispose()


def _tuf_init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root-keys-dir", type=Path, required=True, metavar="DIR",
                        help="where the root key is written (then move it to offline storage)")


def _tuf_init(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.tuf_repository import init_repository

    settings = _settings(args)
    repo_dir, keys_dir = settings.resolve(settings.tuf.repository_dir), settings.resolve(settings.tuf.keys_dir)
    root_keys_dir = args.root_keys_dir.resolve()
    if root_keys_dir in (keys_dir, repo_dir) or repo_dir in root_keys_dir.parents:
        raise ConfigError(f"{root_keys_dir}: the root key must not go with the online keys or the served files")
    try:
        init_repository(repo_dir, keys_dir, root_keys_dir, settings.tuf.expiry())
    except FileExistsError as exc:
        raise ConfigError(str(exc)) from exc
    except OSError as exc:
        raise ConfigError(f"cannot create the TUF repository: {exc.strerror or exc}: {exc.filename or ''}") from exc
    print(f"TUF repository created in {repo_dir} (serve it over HTTP: metadata/ and targets/)", file=out)
    print(f"online keys in {keys_dir}", file=out)
    print(f"ROOT KEY written to {root_keys_dir / 'root.pem'}: move it to offline storage now; "
          "it is needed only to rotate keys", file=out)
    print(f"devices trust {repo_dir / 'metadata' / '1.root.json'} (install it as their root.json)", file=out)
    return 0


def _tuf_refresh(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.director import repository_paths
    from fleet_server.tuf_repository import refresh_timestamp

    settings = _settings(args)
    repo_dir, keys_dir = repository_paths(settings)
    print(f"timestamp version {refresh_timestamp(repo_dir, keys_dir, settings.tuf.expiry())}", file=out)
    return 0


def _tuf_rotate_arguments(parser: argparse.ArgumentParser) -> None:
    from fleet_server.tuf_keys import ROTATABLE

    parser.add_argument("roles", nargs="+", choices=ROTATABLE, metavar="ROLE",
                        help=f"the roles that get a fresh key: {', '.join(ROTATABLE)}")
    parser.add_argument("--root-keys-dir", type=Path, required=True, metavar="DIR",
                        help="the current (offline) root key, needed to sign the new root")
    parser.add_argument("--new-root-keys-dir", type=Path, metavar="DIR",
                        help="where a new root key is written (rotating root); keep it offline too")


def _tuf_rotate(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.director import repository_paths
    from fleet_server.tuf_keys import rotate_keys

    settings = _settings(args)
    repo_dir, keys_dir = repository_paths(settings)
    if "root" in args.roles and args.new_root_keys_dir is None:
        raise ConfigError("rotating root needs --new-root-keys-dir (where the new root key goes, offline)")
    if not (args.root_keys_dir / "root.pem").is_file():
        raise ConfigError(f"{args.root_keys_dir}: no root.pem there (the current root key)")
    try:
        version = rotate_keys(repo_dir, keys_dir, args.root_keys_dir, args.roles, args.new_root_keys_dir,
                              settings.tuf.expiry())
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    print(f"root version {version} published: new keys for {', '.join(args.roles)}; devices follow it on their "
          "next refresh", file=out)
    if "root" in args.roles:
        print(f"NEW ROOT KEY written to {args.new_root_keys_dir}: move it offline; the old one can be destroyed "
              "once every device has refreshed", file=out)
    return 0


def _publish_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, metavar="PATH", help="a signed bundle directory or its tar")


def _publish(args: argparse.Namespace, out: TextIO) -> int:
    from fleet_server.publishing import publish_tar, stage_path, staging_area

    settings = _settings(args)
    with _engine(settings) as engine, staging_area(settings) as work:
        published = publish_tar(engine, settings, stage_path(args.path, work), time.time())
    row = published.row
    what = "published" if published.new else "already published (same content)"
    print(f"{what}: {row['model']} version {row['version']} as {row['target']} (sha256 {row['sha256']}, "
          f"{row['length']} bytes, device classes {', '.join(row['device_classes'])}, "
          f"signed by key {row['signer_key_id']})", file=out)
    return 0


def _rollout_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for name, (add, handler, help_text) in _ACTIONS.items():
        sub = actions.add_parser(name, help=help_text, description=help_text)
        # Repeated here so they may follow the action; SUPPRESS keeps the parent's value when absent.
        sub.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help="settings YAML")
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
        add(sub)
        sub.set_defaults(handler=handler)


def _create_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="BUNDLE_MODEL")
    parser.add_argument("version", metavar="BUNDLE_VERSION")
    parser.add_argument("--device-class", required=True, metavar="C")
    parser.add_argument("--canary", nargs="+", action="extend", default=[], metavar="DEV",
                        help="devices that take it first")
    parser.add_argument("--percent", type=int, default=0, help="share of the class beyond the canaries (0..100)")


def _id_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rollout_id", type=int, metavar="ID")


def _advance_arguments(parser: argparse.ArgumentParser) -> None:
    _id_argument(parser)
    parser.add_argument("percent", type=int, metavar="PERCENT")


def _pause_arguments(parser: argparse.ArgumentParser) -> None:
    _id_argument(parser)
    parser.add_argument("--reason", default="", metavar="R")


def _rollout_action(work: Callable[[Engine, FleetSettings, argparse.Namespace], Any]) -> Handler:
    """A handler running ``work`` and printing the rollout it returns."""
    def handler(args: argparse.Namespace, out: TextIO) -> int:
        settings = _settings(args)
        with _engine(settings) as engine:
            result = work(engine, settings, args)
        if isinstance(result, list):
            for rollout in result:
                print(_rollout_line(rollout), file=out)
            return 0
        print(_rollout_line(result), file=out)
        for device in result.get("devices", []) if args.action == "show" else []:
            print(_device_line(device), file=out)
        return 0
    return handler


def _rollout_line(rollout: Dict[str, Any]) -> str:
    canary = f" canary {','.join(rollout['canary'])}" if rollout["canary"] else ""
    reason = f" ({rollout['pause_reason']})" if rollout["pause_reason"] else ""
    return (f"rollout {rollout['id']}: {rollout['model']} {rollout['version']} -> {rollout['device_class']} "
            f"{rollout['percent']}%{canary} {rollout['state']}{reason}")


def _device_line(device: Dict[str, Any]) -> str:
    report = device["report"]
    said = ""
    if report:
        said = f"; last report: {report['status']}" + (f": {report['reason']}" if report["reason"] else "")
    member = "member" if device["member"] else "not in it"
    return f"  {device['device_id']}: {member}, active {device['active'] or '-'}{said}"


def _run_create(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import create_rollout

    return create_rollout(engine, settings, args.model, args.version, args.device_class, args.canary, args.percent,
                          time.time())


def _run_advance(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import advance_rollout

    return advance_rollout(engine, settings, args.rollout_id, args.percent, time.time())


def _run_pause(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import pause_rollout

    return pause_rollout(engine, args.rollout_id, args.reason, time.time())


def _run_resume(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import resume_rollout

    return resume_rollout(engine, args.rollout_id, time.time())


def _run_cancel(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import cancel_rollout

    return cancel_rollout(engine, settings, args.rollout_id, time.time())


def _run_list(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import list_rollouts

    return list_rollouts(engine)


def _run_show(engine: Engine, settings: FleetSettings, args: argparse.Namespace) -> Any:
    from fleet_server.rollouts import show_rollout

    return show_rollout(engine, args.rollout_id)


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    del parser


_ACTIONS: Dict[str, Tuple[Callable[[argparse.ArgumentParser], None], Handler, str]] = {
    "create": (_create_arguments, _rollout_action(_run_create), "roll a published bundle out to a device class"),
    "advance": (_advance_arguments, _rollout_action(_run_advance), "raise a rollout's percent"),
    "pause": (_pause_arguments, _rollout_action(_run_pause), "stop a rollout from growing"),
    "resume": (_id_argument, _rollout_action(_run_resume), "let a paused rollout advance again"),
    "cancel": (_id_argument, _rollout_action(_run_cancel), "end a rollout for good"),
    "list": (_no_arguments, _rollout_action(_run_list), "every rollout"),
    "show": (_id_argument, _rollout_action(_run_show), "a rollout and each device of its class"),
}

COMMANDS: Dict[str, Tuple[Callable[[argparse.ArgumentParser], None], Optional[Handler], str]] = {
    "tuf-init": (_tuf_init_arguments, _tuf_init, "create the TUF repository and its keys (root key to go offline)"),
    "tuf-refresh": (_no_arguments, _tuf_refresh, "re-sign the TUF timestamp (run it from a timer)"),
    "tuf-rotate": (_tuf_rotate_arguments, _tuf_rotate, "give TUF roles fresh keys through a new root version"),
    "publish": (_publish_arguments, _publish, "publish a signed bundle (directory or tar)"),
    "rollout": (_rollout_arguments, None, "create, advance, pause, resume, cancel, list or show rollouts"),
}

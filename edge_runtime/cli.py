"""The ``edge-runtime`` command.

Subcommands: ``keygen`` (a bundle signing key pair), ``check`` (verify a bundle against
trusted public keys), ``serve`` (the KServe v2 HTTP server), ``info`` (host fingerprint),
``activate`` (a model's active version), ``agent`` (uploads telemetry to the fleet server) and
``sync --once`` (one pass of the fleet sync: pull, verify, install, health-gate new bundles).
Every :class:`~edge_runtime.errors.EdgeRuntimeError` is printed as one line,
``edge-runtime: error: <message>``, on stderr with exit status 1; usage errors exit with
status 2 (argparse).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, TextIO

# On Python 3.8 (JetPack 5) cryptography warns at import that its 3.8 support is deprecated: two
# lines on stderr on every run, where a user's error is one line. Only that warning, and only in the
# CLI (library users still see it). Its category, cryptography.utils.CryptographyDeprecationWarning
# (a UserWarning), cannot be named here: importing it is what warns.
warnings.filterwarnings(
    "ignore",
    message=r"Python 3\.8 is no longer supported by the Python core team and support for it is deprecated in "
    r"cryptography",
    category=UserWarning,
)

from edge_runtime.bundle.manifest import Manifest, TargetInfo  # noqa: E402  (after the filter above)
from edge_runtime.bundle.signing import generate_keypair, key_id, load_public_key  # noqa: E402
from edge_runtime.bundle.verify import verify_bundle  # noqa: E402
from edge_runtime.command_line import Handler, run_command  # noqa: E402
from edge_runtime.errors import ConfigError, EdgeRuntimeError  # noqa: E402
from edge_runtime.fleet.commands import FLEET_COMMANDS  # noqa: E402

PROG = "edge-runtime"



def main(argv: Optional[List[str]] = None) -> int:
    """Run one subcommand; return the process exit status."""
    args = build_parser().parse_args(argv)
    return run_command(PROG, args.handler, args, sys.stdout)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one sub-parser per command."""
    parser = argparse.ArgumentParser(prog=PROG, description="Edge inference runtime for Jetson.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for name, (add_arguments, handler, help_text) in _COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        add_arguments(sub)
        sub.add_argument("--debug", action="store_true", help="show the traceback of an unexpected error")
        sub.set_defaults(handler=handler)
    return parser


# --- keygen ---------------------------------------------------------------------------------


def _keygen_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="directory for NAME.key and NAME.pub (created if missing)")
    parser.add_argument("--name", default="signing",
                        help="file name stem of the key pair (default: signing)")


def _keygen(args: argparse.Namespace, out: TextIO) -> int:
    key_path, pub_path = generate_keypair(args.out, args.name)
    print(f"private key: {key_path}  (keep it secret; sign bundles with it)", file=out)
    print(f"public key:  {pub_path}  (install on devices to trust bundles)", file=out)
    print(f"key id:      {key_id(load_public_key(pub_path))}", file=out)
    return 0


# --- serve / info --------------------------------------------------------------------------


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", type=Path, metavar="DIR",
                        help="model repository: DIR/<model>/<version>/ bundles")
    parser.add_argument("--config", required=True, type=Path, metavar="FILE", help="runtime settings YAML")
    parser.add_argument("--host", help="address to bind (default from the settings: 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default from the settings: 8000; 0 picks a free one)")
    parser.add_argument("--fake", action="append", default=[], metavar="NAME[:delay_ms=N]",
                        help="also serve a fake model NAME (no bundle; for trying the API); options after ':' "
                             "(comma-separated): delay_ms, scale, offset, fail")


def _serve(args: argparse.Namespace, out: TextIO) -> int:
    import logging

    from edge_runtime import daemon
    from edge_runtime.config import load_runtime_settings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_runtime_settings(args.config)
    if args.repository is None and not args.fake:
        raise ConfigError("nothing to serve: give --repository DIR and/or --fake NAME")
    host = args.host or settings.host
    port = settings.port if args.port is None else args.port
    return daemon.run(settings, args.repository, host, port, args.fake)


def _info_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--config", type=Path, metavar="FILE",
                        help="runtime settings YAML (as for serve): also say which backend its device config "
                             "prefers, which one will serve here, and why")


def _info(args: argparse.Namespace, out: TextIO) -> int:
    import json

    from edge_runtime.host_info import host_facts

    facts = host_facts()
    facts.update(_backend_facts(args.config))
    if args.json:
        print(json.dumps(facts, indent=2), file=out)
    else:
        width = max(len(key) for key in facts) + 2
        for key, value in facts.items():
            print(f"{key + ':':{width}}{value if value is not None else '-'}", file=out)
    return 0


def _backend_facts(config: Optional[Path]) -> Dict[str, Optional[str]]:
    """Without a config: whether each backend library imports here. With one: the backend choice for its device."""
    from edge_runtime.backends.choice import choose_backend, tensorrt_library_problems
    from edge_runtime.config import load_device_config, load_runtime_settings

    facts: Dict[str, Optional[str]] = {
        name: "importable" if problem is None else f"not installed ({problem})"
        for name, problem in tensorrt_library_problems().items()
    }
    if config is None:
        return facts
    settings = load_runtime_settings(config)
    device = load_device_config(settings.resolve(settings.device_config))
    facts.update({"device_config": device.source, "backend_preferred": device.backend})
    try:
        choice = choose_backend(device)
    except EdgeRuntimeError as exc:
        facts.update({"backend": None, "backend_note": f"models fail to load: {exc}"})
    else:
        facts.update({"backend": choice.name, "backend_note": choice.reason or None})
    return facts


# --- check ----------------------------------------------------------------------------------


def _check_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bundle", type=Path, metavar="BUNDLE", help="bundle directory")
    parser.add_argument("--key", dest="keys", action="append", required=True, type=Path,
                        metavar="PUB", help="trusted public key file (repeat to trust several)")


def _check(args: argparse.Namespace, out: TextIO) -> int:
    trusted = [load_public_key(path) for path in args.keys]
    manifest = verify_bundle(args.bundle, trusted)
    _print_manifest(args.bundle, manifest, out)
    return 0


def _print_manifest(bundle: Path, manifest: Manifest, out: TextIO) -> None:
    print(f"{bundle}: OK (signature and {len(manifest.artifacts)} file(s) verified)", file=out)
    print(f"name:     {manifest.name}", file=out)
    print(f"version:  {manifest.version}", file=out)
    print(f"created:  {manifest.created}", file=out)
    print("targets:" + ("" if manifest.targets else "  none"), file=out)
    for target in manifest.targets:
        print(f"  {target.name}: {_describe_target(target)}", file=out)
    print("artifacts:", file=out)
    width = max((len(artifact.path) for artifact in manifest.artifacts), default=0)
    for artifact in manifest.artifacts:
        details = [artifact.kind, f"{artifact.size} bytes", f"sha256 {artifact.sha256[:16]}"]
        if artifact.target is not None:
            details.append(f"target {artifact.target}")
        if artifact.precision is not None:
            details.append(artifact.precision)
        print(f"  {artifact.path:<{width}}  {', '.join(details)}", file=out)


def _describe_target(target: TargetInfo) -> str:
    parts = [target.device_class, target.backend, target.precision]
    optional = (
        ("compute capability", target.compute_capability),
        ("TensorRT", target.tensorrt_version),
        ("JetPack", target.jetpack),
        ("L4T", target.l4t),
        ("DLA core", target.dla_core),
    )
    parts.extend(f"{label} {value}" for label, value in optional if value is not None)
    return ", ".join(parts)


# --- activate -------------------------------------------------------------------------------


def _activate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repository", required=True, type=Path, metavar="DIR",
                        help="model repository: DIR/<model>/<version>/ bundles")
    parser.add_argument("--key", dest="keys", action="append", default=[], type=Path, metavar="PUB",
                        help="verify the version's bundle with this trusted public key first (repeatable)")
    parser.add_argument("model", metavar="MODEL", help="model name (a directory of the repository)")
    parser.add_argument("version", metavar="VERSION", help="version to serve (a directory of the model)")


def _activate(args: argparse.Namespace, out: TextIO) -> int:
    from edge_runtime.serving.active_version import (
        PointerError,
        is_version_name,
        next_pointer,
        read_pointer,
        write_pointer,
    )

    model_dir = args.repository / args.model
    if not is_version_name(args.version):
        raise ConfigError(f"version {args.version!r}: expected a version number (ASCII digits)")
    if not (model_dir / args.version).is_dir():
        raise ConfigError(f"{model_dir / args.version}: no such version directory")
    if args.keys:
        verify_bundle(model_dir / args.version, [load_public_key(path) for path in args.keys])
    try:
        current = read_pointer(model_dir)
    except PointerError as exc:
        print(f"replacing an invalid pointer ({exc})", file=out)
        current = None
    pointer = next_pointer(current, args.version)
    write_pointer(model_dir, pointer)
    print(f"{args.model}: version {pointer.active} is active (last good: {pointer.last_good or '-'}); "
          "a running server serves it after its next load of the model or a restart", file=out)
    return 0


class _Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    help: str


_COMMANDS: Dict[str, _Command] = {
    "keygen": _Command(_keygen_arguments, _keygen, "create an ed25519 key pair to sign bundles"),
    "check": _Command(_check_arguments, _check, "verify a bundle's signature and files"),
    "serve": _Command(_serve_arguments, _serve, "serve a model repository over the KServe v2 HTTP API"),
    "info": _Command(_info_arguments, _info, "print the host fingerprint (platform, Jetson model, L4T, CUDA, ...)"),
    "activate": _Command(_activate_arguments, _activate, "make a model version the active one (the version served)"),
    **{name: _Command(*command) for name, command in FLEET_COMMANDS.items()},
}


if __name__ == "__main__":
    sys.exit(main())

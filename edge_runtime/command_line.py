"""How both command-line tools (`edge-runtime`, `edge-fleet`) run a subcommand and report its failure.

A user's error (any :class:`~edge_runtime.errors.EdgeRuntimeError`) is one line on stderr,
``<prog>: error: <message>``, exit status 1. Anything else is a bug: one line naming the exception
and pointing at ``--debug``, which re-raises so that the traceback shows.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, TextIO

from edge_runtime.errors import EdgeRuntimeError

Handler = Callable[[argparse.Namespace, TextIO], int]


def one_line(message: str) -> str:
    """``message`` with every run of whitespace (newlines included) as one space."""
    return " ".join(message.split())


def run_command(prog: str, handler: Handler, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    """Run ``handler``; its exit status, or 1 after one line on stderr (the traceback with ``args.debug``)."""
    debug = bool(getattr(args, "debug", False))
    try:
        return handler(args, out)
    except EdgeRuntimeError as exc:
        if debug:
            raise
        print(f"{prog}: error: {one_line(str(exc))}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        print(f"{prog}: error: unexpected {type(exc).__name__}: {one_line(str(exc))[:300]} "
              "(--debug shows the traceback)", file=sys.stderr)
        return 1

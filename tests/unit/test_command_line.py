"""run_command: how both CLIs turn a failure into one line (or, with --debug, a traceback)."""

from __future__ import annotations

import argparse
import io
from typing import TextIO

import pytest

from edge_runtime.command_line import run_command
from edge_runtime.errors import ConfigError


def _fails_with(exc: BaseException):  # type: ignore[no-untyped-def]
    def handler(args: argparse.Namespace, out: TextIO) -> int:
        raise exc

    return handler


def test_a_users_error_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_command("prog", _fails_with(ConfigError("bad.yaml: port:\n  expected 1..65535")),
                         argparse.Namespace(debug=False), io.StringIO())
    assert status == 1 and capsys.readouterr().err == "prog: error: bad.yaml: port: expected 1..65535\n"


def test_a_bug_is_one_line_pointing_at_debug(capsys: pytest.CaptureFixture[str]) -> None:
    status = run_command("prog", _fails_with(KeyError("x")), argparse.Namespace(), io.StringIO())
    err = capsys.readouterr().err
    assert status == 1 and err.count("\n") == 1
    assert err.startswith("prog: error: unexpected KeyError: 'x'") and "--debug" in err


def test_debug_shows_the_traceback() -> None:
    with pytest.raises(KeyError):
        run_command("prog", _fails_with(KeyError("x")), argparse.Namespace(debug=True), io.StringIO())
    with pytest.raises(ConfigError):
        run_command("prog", _fails_with(ConfigError("x")), argparse.Namespace(debug=True), io.StringIO())


def test_the_handlers_status_is_returned() -> None:
    assert run_command("prog", lambda args, out: 3, argparse.Namespace(), io.StringIO()) == 3

"""Every shell script under scripts/ is shellcheck clean at the strictest severity (style).

The sourced libraries (scripts/lib/*.sh) carry a ``# shellcheck shell=bash`` directive; shellcheck runs
from the repository root with --external-sources so that ``source scripts/lib/x.sh`` is followed and
checked where it is used.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import List

from ci_policy import unavailable

REPO = Path(__file__).resolve().parents[2]
_SHELLS = (b"#!/bin/sh", b"#!/bin/bash", b"#!/usr/bin/env bash", b"#!/usr/bin/env sh")


def _shell_scripts() -> List[Path]:
    """Every *.sh under scripts/, and any other file there that starts with a shell shebang."""
    found = []
    for path in sorted((REPO / "scripts").rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts:
            continue
        if path.suffix == ".sh":
            found.append(path)
        else:
            with path.open("rb") as handle:
                if handle.readline().startswith(_SHELLS):
                    found.append(path)
    return found


def test_every_shell_script_is_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        unavailable("shellcheck is not installed (Debian package: shellcheck)")
    scripts = _shell_scripts()
    assert any(p.name == "test.sh" for p in scripts)  # the search itself works
    done = subprocess.run([shellcheck, "--severity=style", "--external-sources", "--format=gcc",
                           *(str(p.relative_to(REPO)) for p in scripts)],
                          capture_output=True, text=True, cwd=str(REPO), check=False)
    assert done.returncode == 0, done.stdout + done.stderr

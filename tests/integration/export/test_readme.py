"""The README's "Using it" commands, run as written from a fresh checkout's root.

The commands are read from README.md itself (the first ```bash block under "## Using it"), so the
README cannot drift from what works. They run in a temporary folder laid out like the repository
root: ``device_configs/`` is a copy of the real one and ``.venv/bin`` a link to this interpreter's bin
folder, which is what `scripts/demo.sh` creates. ``serve`` runs until stopped, so each serve line
is started, must print that it serves (the repository's model READY), and is stopped with SIGTERM,
after which it must exit 0.
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List

import pytest

REPO = Path(__file__).resolve().parents[3]
PORT = 8000  # device_configs/runtime/example.yaml


def readme_commands() -> List[str]:
    """The shell commands of the README's "Using it" block, continuation lines joined."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Using it"):]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "README.md: no ```bash block under '## Using it'"
    joined = block.group(1).replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if line.strip() and not line.strip().startswith("#")]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def _serve(command: str, cwd: Path, expect: str) -> None:
    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    lines: List[str] = []
    try:
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "serving on" in line:
                break
        output = "".join(lines)
        assert "serving on http://127.0.0.1:8000" in output and expect in output, f"{command}:\n{output}"
    finally:
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0, f"{command}: exit {process.returncode}\n{''.join(lines)}{rest}"


@pytest.mark.slow
def test_every_readme_command_works_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert any(c.startswith(".venv/bin/edge-runtime serve --repository") for c in commands)
    if not _port_free(PORT):
        pytest.skip(f"port {PORT} (the example settings' port) is in use on this machine")
    shutil.copytree(REPO / "device_configs", tmp_path / "device_configs")  # its paths resolve against itself
    (tmp_path / ".venv").mkdir()
    (tmp_path / ".venv" / "bin").symlink_to(Path(sys.executable).parent)
    for command in commands:
        words = shlex.split(command, comments=True)
        if words[:2] == [".venv/bin/edge-runtime", "serve"]:
            _serve(command, tmp_path, "digits v1: READY" if "--repository" in words else "echo v1: READY")
            continue
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"

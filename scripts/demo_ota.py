"""Wait until the runtime serves a model version the fleet rolled out, and say how it got there (scripts/demo.sh).

Polls the runtime's ``/v2/models/<model>`` until it lists ``--version`` (the agent's next sync pass
pulls, installs and gates it), printing the agent's sync log lines as they appear; exits 1 with the
last of them if it does not happen within ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import List


def versions(url: str, model: str) -> List[str]:
    """The versions the runtime serves for ``model`` (none when it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://{url}/v2/models/{model}", timeout=5) as reply:
            return list(json.loads(reply.read()).get("versions", []))
    except (OSError, ValueError, urllib.error.URLError):
        return []


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the runtime, e.g. 127.0.0.1:8000")
    parser.add_argument("--model", required=True)
    parser.add_argument("--version", required=True)
    parser.add_argument("--agent-log", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=180.0)
    args = parser.parse_args()
    shown = 0
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        lines = [line for line in args.agent_log.read_text(errors="replace").splitlines() if "sync" in line]
        for line in lines[shown:]:
            print(f"  agent: {line}")
        shown = len(lines)
        served = versions(args.url, args.model)
        if served == [args.version]:
            print(f"runtime {args.url}: {args.model} now serves version {args.version} (updated over the air)")
            return 0
        time.sleep(1)
    print(f"runtime {args.url}: {args.model} still serves {versions(args.url, args.model)} after {args.timeout:.0f} s; "
          f"see {args.agent_log}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())

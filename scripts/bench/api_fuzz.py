"""Long schemathesis run of docs/openapi.yaml against the app (in-process, WSGI): >= 1000 examples per operation.

It runs the same test that CI runs with a few examples (tests/integration/test_openapi_schemathesis.py),
with SCHEMATHESIS_EXAMPLES raised, and prints what it measured: for each operation the number of
requests made and their status codes, the number of 5xx answers (the goal: none) and whether every
check passed (schema conformance of each response, schema-violating requests refused with a 4xx).

    python scripts/bench/api_fuzz.py [--examples 1000] [--out docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[2]
TEST = "tests/integration/test_openapi_schemathesis.py"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="hypothesis max_examples per operation")
    parser.add_argument("--out", type=Path, help="append the results (markdown) to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="api-fuzz-") as tmp:
        tally_path = Path(tmp) / "tally.json"
        env = {**os.environ, "SCHEMATHESIS_EXAMPLES": str(args.examples), "SCHEMATHESIS_TALLY": str(tally_path)}
        started = time.perf_counter()
        # -p no:cacheprovider: no .pytest_cache; hypothesis' example database stays in the temp dir.
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(REPO / TEST)],
                                cwd=tmp, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        summary = (result.stdout.strip().splitlines() or ["(no output)"])[-1]
        if not tally_path.exists():
            print(result.stdout[-4000:] + result.stderr[-4000:], file=sys.stderr)
            print(f"api_fuzz: the test run wrote no tally ({summary})", file=sys.stderr)
            return 1
        tally: Dict[str, Dict[str, int]] = json.loads(tally_path.read_text())
    lines = _render(tally, args.examples, summary, elapsed, result.returncode)
    text = "\n".join(lines)
    print(text)
    if result.returncode != 0:
        print(result.stdout[-6000:], file=sys.stderr)
    if args.out:
        with args.out.open("a") as handle:
            handle.write("\n" + text + "\n")
    return result.returncode


def _render(tally: Dict[str, Dict[str, int]], examples: int, summary: str, elapsed: float, rc: int) -> List[str]:
    command = " ".join(["python", "scripts/bench/api_fuzz.py", *sys.argv[1:]])
    lines = ["## API fuzzing: schemathesis against docs/openapi.yaml (in-process WSGI)", "",
             f"`{command}` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, max {examples} examples per "
             f"operation, {elapsed:.0f} s.", "",
             "| operation | requests | status codes | 5xx |", "|---|---:|---|---:|"]
    total = server_errors = 0
    for operation in sorted(tally):
        codes = tally[operation]
        count = sum(codes.values())
        fives = sum(n for code, n in codes.items() if code.startswith("5"))
        total += count
        server_errors += fives
        spread = ", ".join(f"{code}: {codes[code]}" for code in sorted(codes))
        lines.append(f"| `{operation}` | {count} | {spread} | {fives} |")
    lines += ["", f"{total} requests over {len(tally)} operations, {server_errors} answered 5xx "
                  f"(schemathesis' not_a_server_error check fails the run on any). "
                  f"pytest: {summary} (exit {rc})."]
    return lines


if __name__ == "__main__":
    sys.exit(main())

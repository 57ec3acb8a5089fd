"""Kill the writer of the active-version pointer mid-write, again and again: the pointer never tears.

A child process rewrites ``<model>/active.json`` in a loop (``edge_runtime.serving.active_version.
write_pointer``: temp file, fsync, rename, fsync of the folder), each time with the next version.
The parent SIGKILLs it after a random 0-20 ms, then reads the pointer as the runtime does at start
(``read_pointer``): it must always be a valid pointer, either the one before the kill or the one
being written. Leftover temporary files are counted (a kill between create and rename leaves one;
the repository ignores them, as they are not version directories).

    python scripts/bench/pointer_kill_bench.py [--kills 2000] [--out docs/benchmarks.md] [--check]

CI runs 25 kills with --check (exit 1 on any torn or unreadable pointer).
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from edge_runtime.errors import PointerError  # noqa: E402
from edge_runtime.serving.active_version import read_pointer  # noqa: E402

WRITER = """
import sys
from pathlib import Path
from edge_runtime.serving.active_version import ActiveVersion, write_pointer
model_dir, version = Path(sys.argv[1]), int(sys.argv[2])
print("writing", flush=True)
while True:
    version += 1
    write_pointer(model_dir, ActiveVersion(active=str(version), last_good=str(version - 1)))
"""


def one_kill(model_dir: Path, rng: random.Random) -> Optional[str]:
    """Start a writer, kill it mid-loop; the problem with the pointer afterwards, or None."""
    before = read_pointer(model_dir)
    start = int(before.active) if before is not None else 1
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(model_dir), str(start)], cwd=REPO,
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    child.stdout.readline()  # "writing": imports done, the loop is running
    time.sleep(rng.uniform(0, 0.02))
    child.send_signal(signal.SIGKILL)
    child.wait()
    child.stdout.close()
    try:
        after = read_pointer(model_dir)
    except PointerError as exc:
        return f"unreadable pointer: {exc}"
    if after is None:
        return "the pointer disappeared"
    if int(after.active) < start or after.last_good != str(int(after.active) - 1):
        return f"inconsistent pointer {after}"
    return None


def run(kills: int, seed: int) -> Dict[str, object]:
    """``kills`` writer processes killed at random moments; what the pointer looked like after each."""
    rng = random.Random(seed)
    problems = []
    with tempfile.TemporaryDirectory(prefix="pointer-kill-") as tmp:
        model_dir = Path(tmp) / "model"
        model_dir.mkdir()
        started = time.monotonic()
        for _ in range(kills):
            problem = one_kill(model_dir, rng)
            if problem:
                problems.append(problem)
        pointer = read_pointer(model_dir)
        leftovers = [p.name for p in model_dir.iterdir() if p.name != "active.json"]
        return {"kills": kills, "problems": problems, "last_active": pointer.active if pointer else None,
                "leftover_temp_files": len(leftovers), "seconds": time.monotonic() - started}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="append the markdown section to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 on any torn or unreadable pointer")
    args = parser.parse_args()
    result = run(args.kills, args.seed)
    problems = result["problems"]
    assert isinstance(problems, list)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "## Active-version pointer: writer killed mid-write", "",
        f"`python scripts/bench/pointer_kill_bench.py --kills {args.kills}` — {when}, seed {args.seed}.", "",
        f"{result['kills']} writers SIGKILLed at a random 0-20 ms into their write loop "
        f"({result['seconds']:.0f} s); the pointer was read after each kill as the runtime reads it at start.",
        f"Torn, unreadable or inconsistent pointers: {len(problems)}"
        + (f" (first: {'; '.join(problems[:3])})" if problems else "")
        + f"; leftover temporary files: {result['leftover_temp_files']}; last active version written: "
        f"{result['last_active']}.", "",
        f"Goal: no torn pointer: {'met' if not problems else 'NOT met'}.", "",
    ]
    print("\n".join(lines))
    if args.out:
        with args.out.open("a") as handle:
            handle.write("\n" + "\n".join(lines))
    return 1 if args.check and problems else 0


if __name__ == "__main__":
    raise SystemExit(main())

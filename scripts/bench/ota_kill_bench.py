"""SIGKILL the sync agent (``edge-runtime sync --once``) at random points of download, install and switch.

A served TUF repository (tiny 2 and 3, a file server sending tars slowly and answering Range
requests) and a device repository with tiny 0 and 1 (1 active, keep_versions 2). Each sync pass
runs the real CLI with a gate that promotes by writing the pointer, and is killed after a random
delay spanning start-up to the pointer flip. After each kill: the pointer is valid and names
verified versions, every version directory verifies (a torn install otherwise), the version a
restarted runtime tries first verifies. Rounds of kills end with a whole pass (3 active, no
leftovers). Every ``--serve-every`` kills, and at the end, a real ``edge-runtime serve`` infers once.
See tests/integration/ota_support.py.

    python scripts/bench/ota_kill_bench.py [--kills 1000] [--seed 0] [--out docs/benchmarks.md] [--check]
                                           [--tearing]

``--tearing`` runs a defective installer (copies files into place) to show the checks catch tears.
CI runs 200 kills (tests/integration/test_sync_kills.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests" / "integration"))

from ota_support import KillReport, OtaRig, run_kills  # noqa: E402


def markdown(report: KillReport, args: argparse.Namespace) -> List[str]:
    """The benchmark's section for docs/benchmarks.md."""
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    phases = ", ".join(f"{name}: {count}" for name, count in sorted(report.phases.items()))
    problems = report.violations + report.serve_failures
    command = f"python scripts/bench/ota_kill_bench.py --kills {args.kills}" + (" --tearing" if args.tearing else "")
    return [
        "## OTA sync: agent SIGKILLed during download, install and switch", "",
        f"`{command}` — {when}, seed {args.seed}, Python {sys.version.split()[0]}.", "",
        f"{report.kills} `edge-runtime sync --once` passes SIGKILLed at random moments ({report.seconds:.0f} s); "
        f"where the kills landed (from what each left on disk): {phases}.",
        f"Torn installs: {report.torn_installs}; invariant violations: {len(report.violations)}"
        + (f" (first: {'; '.join(problems[:3])})" if problems else "")
        + f"; whole passes after the kills: {report.passes_completed}; restarted runtimes that served a verified "
        f"version: {report.restarts_served} (failed: {len(report.serve_failures)}).", "",
        f"Goal: 0 torn installs, 0 violations: {'met' if not problems and not report.torn_installs else 'NOT met'}.",
        "",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--serve-every", type=int, default=100, help="start a runtime and infer every N kills")
    parser.add_argument("--pause-s", type=float, default=0.01, help="the file server's pause between 1 KiB chunks")
    parser.add_argument("--tearing", action="store_true", help="a defective, non-atomic installer")
    parser.add_argument("--out", type=Path, help="append the markdown section to this file")
    parser.add_argument("--check", action="store_true", help="exit 1 on any torn install or violation")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ota-kill-") as tmp:
        rig = OtaRig(Path(tmp), pause_s=args.pause_s, tearing=args.tearing)
        try:
            report = run_kills(rig, args.kills, args.seed, args.serve_every)
        finally:
            rig.close()
    lines = markdown(report, args)
    print("\n".join(lines))
    print(f"kills={report.kills} torn_installs={report.torn_installs} violations={len(report.violations)} "
          f"restarts_served={report.restarts_served} serve_failures={len(report.serve_failures)}")
    if args.out:
        with args.out.open("a") as handle:
            handle.write("\n" + "\n".join(lines))
    failed = bool(report.torn_installs or report.violations or report.serve_failures)
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Mutation testing of the critical modules with mutmut 3: the kill ratio per module, each survivor's diff.

    .venv/bin/python scripts/bench/mutation.py [--modules GROUP|PATH ...] [--sample N --seed S]
        [--jobs 1] [--min-ratio 0.9] [--report .mutation/report.json] [--keep] [--tally-only]

Groups, modules and the selected tests of each are in scripts/bench/mutation.toml. Each group runs in its
own scratch copy of the tree (.mutation/work/<group>/, ignored by git): the shared checkout is never
rewritten. ``--sample N --seed S`` runs a fixed random sample of N mutants over the chosen groups (CI:
scripts/lib/mutation_sample.sh); ``--min-ratio`` makes the run fail below that overall ratio. Survivors
whose diff fingerprint is in scripts/bench/mutation_equivalent.txt are equivalent mutants: listed with
the reason, left out of the ratio.

Why mutmut (3.8.1) and not cosmic-ray (8.7.0), measured on this 2-core machine:
- Where the mutants live. cosmic-ray rewrites the module's file on disk for each mutant. With the
  editable install every process that imports edge_runtime from the checkout (another helper's tests,
  a running server) would get the mutant; it has to run in a copy. mutmut copies the tree to
  ``mutants/`` and switches mutants at run time: each mutated function is a trampoline that calls the
  variant named by ``MUTANT_UNDER_TEST``.
- Subprocess tests. An ``edge-runtime serve`` subprocess inherits ``MUTANT_UNDER_TEST``; this wrapper puts
  ``mutants/`` first on its PYTHONPATH, so it imports and runs the mutated code (checked: a child started
  from another directory imports ``mutants/edge_runtime/...``). But mutmut picks the tests for a mutant
  from a trace of in-process calls, which cannot see the server's process: integration tests are not in
  the selection (see mutation.toml), and no kill is counted for code only a subprocess ran.
- Time. cosmic-ray starts pytest afresh for every mutant and runs the whole test command: about 1.5 s of
  start-up (numpy, flask, onnx imports) before the first test, x ~4 100 mutants = 1.7 h of start-up alone
  on these 2 cores. mutmut forks each mutant from a process that has already imported everything and
  runs only the selected tests that call the mutated function: atomic_io's 209 mutants take 66 s, the
  whole run about 31 minutes with --jobs 1 (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import tomllib

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_results import GroupResult, ModuleTally, load_equivalents, mutant_names, tally_group

REPO = Path(__file__).resolve().parents[2]
CONFIG = Path(__file__).with_suffix(".toml")
EQUIVALENTS = Path(__file__).with_name("mutation_equivalent.txt")
STATE = REPO / ".mutation"
COPIED = ("edge_runtime", "export", "tests", "device_configs", "scripts")  # some tests import scripts/bench
LIST_ONLY = "zz-mutation-list-only*"  # a filter matching no mutant: mutmut generates, traces, then stops


def toml_value(value: Any) -> str:
    """A str/number/bool/list as TOML (JSON's spelling of these is valid TOML)."""
    return json.dumps(value)


def make_workspace(work: Path, name: str, group: Dict[str, Any], base: Dict[str, Any], modules: List[str]
                   ) -> Path:
    """A fresh copy of the tree for one group under ``work``, with its mutmut settings in its pyproject.toml."""
    workspace = work / name
    shutil.rmtree(workspace, ignore_errors=True)
    workspace.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for top in COPIED:
        shutil.copytree(REPO / top, workspace / top, ignore=skip)
    pytest_options = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    settings = {**base, **group.get("mutmut", {}), "source_paths": ["edge_runtime", "export"],
                "only_mutate": modules, "pytest_add_cli_args_test_selection": group["tests"],
                "also_copy": ["device_configs", "scripts"]}
    lines = ["[tool.pytest.ini_options]"] + [f"{k} = {toml_value(v)}" for k, v in pytest_options.items()]
    lines += ["", "[tool.mutmut]"] + [f"{k} = {toml_value(v)}" for k, v in settings.items()]
    (workspace / "pyproject.toml").write_text("\n".join(lines) + "\n")
    return workspace


class GroupFailed(Exception):
    """mutmut could not run a group (its clean tests failed, a test did not import): the log's tail."""


def run_mutmut(workspace: Path, jobs: int, names: List[str], listing: bool = False) -> float:
    """``mutmut run`` in the workspace (its log in mutmut.log); the seconds it took."""
    # Subprocess servers import the mutants. The folder must exist before Python starts: a path missing at
    # start is cached as having no importer, and mutmut's own process would then import the originals.
    (workspace / "mutants").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(workspace / "mutants")}
    env.pop("MUTANT_UNDER_TEST", None)
    started = time.monotonic()
    with (workspace / ("mutmut-list.log" if listing else "mutmut.log")).open("w") as log:
        done = subprocess.run([sys.executable, "-m", "mutmut", "run", "--max-children", str(jobs), *names],
                              cwd=workspace, env=env, stdout=log, stderr=subprocess.STDOUT, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0 and not listing:
        tail = (workspace / "mutmut.log").read_text(errors="replace")[-3000:]
        raise GroupFailed(f"mutmut failed in {workspace} (exit {done.returncode}):\n{tail}")
    return elapsed


def chosen_groups(config: Dict[str, Any], wanted: Optional[List[str]]) -> Dict[str, List[str]]:
    """Group -> the modules to mutate in it: all, or those named by ``--modules`` (group names or paths)."""
    groups: Dict[str, List[str]] = {}
    for name, group in config["groups"].items():
        modules = [m for m in group["modules"] if wanted is None or name in wanted or m in wanted]
        if modules:
            groups[name] = modules
    known = set(config["groups"]) | {m for g in config["groups"].values() for m in g["modules"]}
    unknown = sorted(set(wanted or []) - known)
    if unknown:
        raise SystemExit(f"unknown group or module: {', '.join(unknown)} (see {CONFIG.name})")
    return groups


def ratio_text(tally: ModuleTally) -> str:
    """``93.1 %`` or ``-`` when nothing was counted."""
    return "-" if tally.ratio is None else f"{100 * tally.ratio:.1f} %"


def print_results(results: Dict[str, GroupResult], seconds: Dict[str, float], overall: ModuleTally) -> None:
    """The per-module table, the overall ratio, then every survivor with its diff and the equivalents."""
    print(f"\n{'module':<42} {'mutants':>7} {'killed':>6} {'t/o':>4} {'surv':>5} {'no-t':>5} {'equiv':>5}  ratio")
    for group, result in results.items():
        for module, t in result.tallies.items():
            print(f"{module:<42} {t.total:>7} {t.killed:>6} {t.timeout:>4} {t.survived:>5} {t.no_tests:>5} "
                  f"{t.equivalent:>5}  {ratio_text(t)}")
        print(f"  ({group}: {seconds[group]:.0f} s)")
    print(f"{'overall':<42} {overall.total:>7} {overall.killed:>6} {overall.timeout:>4} {overall.survived:>5} "
          f"{overall.no_tests:>5} {overall.equivalent:>5}  {ratio_text(overall)}")
    for result in results.values():
        for survivor in result.survivors:
            print(f"\n# {survivor['mutant']} [{survivor['status']}] fingerprint {survivor['fingerprint']}")
            print(survivor["diff"], end="")
    for result in results.values():
        for equivalent in result.equivalents:
            print(f"\n# equivalent {equivalent['mutant']} ({equivalent['fingerprint']}): {equivalent['reason']}")


def parse_args(argv: Optional[List[str]]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modules", nargs="+", help="groups or module paths of mutation.toml (default: all)")
    parser.add_argument("--sample", type=int, help="run only N mutants, drawn with --seed over all chosen groups")
    parser.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested in parallel (default 1)")
    parser.add_argument("--min-ratio", type=float, help="exit 1 when the overall kill ratio is below this (0-1)")
    parser.add_argument("--report", type=Path, default=STATE / "report.json", help="the JSON report")
    parser.add_argument("--work", type=Path, default=STATE / "work",
                        help="where the workspaces go (default .mutation/work): one per concurrent run")
    parser.add_argument("--keep", action="store_true", help="keep the workspaces (--work) afterwards")
    parser.add_argument("--tally-only", action="store_true",
                        help="run nothing: re-read the workspaces a --keep run left (after editing the equivalents)")
    return parser.parse_args(argv)


def run_groups(args: argparse.Namespace, config: Dict[str, Any], groups: Dict[str, List[str]]
               ) -> Tuple[Dict[str, GroupResult], Dict[str, float], Dict[str, str]]:
    """Mutate each group in a fresh workspace (``--tally-only``: read the kept ones); results, seconds, failures."""
    if args.tally_only:
        workspaces = {name: args.work / name for name in groups if (args.work / name).is_dir()}
    else:
        workspaces = {name: make_workspace(args.work, name, config["groups"][name], config["mutmut"], modules)
                      for name, modules in groups.items()}
    seconds: Dict[str, float] = {name: 0.0 for name in workspaces}
    failed: Dict[str, str] = {}
    sample: Optional[List[str]] = None
    if args.sample is not None:
        every: List[str] = []
        for name, workspace in workspaces.items():
            if not args.tally_only:
                seconds[name] = run_mutmut(workspace, args.jobs, [LIST_ONLY], listing=True)
            every += mutant_names(workspace, groups[name])
        sample = sorted(random.Random(args.seed).sample(every, min(args.sample, len(every))))
    equivalents = load_equivalents(EQUIVALENTS)
    results: Dict[str, GroupResult] = {}
    for name, workspace in workspaces.items():
        names = None if sample is None else sorted(set(sample) & set(mutant_names(workspace, groups[name])))
        if names == []:
            continue
        try:
            if not args.tally_only:
                print(f"{name}: mutating {', '.join(groups[name])} ...", flush=True)
                seconds[name] += run_mutmut(workspace, args.jobs, names or [])
        except GroupFailed as exc:  # the other groups still run; the run fails at the end
            failed[name] = str(exc)[-1500:]
            print(f"{name}: FAILED\n{exc}", flush=True)
            continue
        results[name] = tally_group(workspace, groups[name], names, equivalents)
    return results, seconds, failed


def main(argv: Optional[List[str]] = None) -> int:
    """Run the groups, print and write the report; 1 when a group failed or below --min-ratio."""
    args = parse_args(argv)
    config = tomllib.loads(CONFIG.read_text())
    groups = chosen_groups(config, args.modules)
    STATE.mkdir(exist_ok=True)
    (STATE / ".gitignore").write_text("*\n")
    started, wall = datetime.now(timezone.utc), time.monotonic()
    results, seconds, failed = run_groups(args, config, groups)
    overall = ModuleTally()
    for result in results.values():
        for tally in result.tallies.values():
            overall.add(tally)
    print_results(results, seconds, overall)
    total_s = time.monotonic() - wall
    print(f"\n{total_s:.0f} s with --jobs {args.jobs}; report: {args.report} (survivors: "
          f"{args.report.with_suffix('.survivors.txt')})")
    write_report(args, started, total_s, results, seconds, overall, failed)
    if not args.keep and not args.tally_only:
        for name in groups:  # only this run's workspaces: another run may be using --work too
            shutil.rmtree(args.work / name, ignore_errors=True)
    if failed:
        print(f"groups that did not run: {', '.join(failed)}")
        return 1
    if args.min_ratio is not None and (overall.ratio or 0.0) < args.min_ratio:
        print(f"kill ratio {ratio_text(overall)} is below --min-ratio {100 * args.min_ratio:.1f} %")
        return 1
    return 0


def write_report(args: argparse.Namespace, started: datetime, total_s: float, results: Dict[str, GroupResult],
                 seconds: Dict[str, float], overall: ModuleTally, failed: Dict[str, str]) -> None:
    """The JSON report: the run, per-module counts and ratios, survivors (with diffs) and equivalents."""
    def counts(t: ModuleTally) -> Dict[str, Any]:
        return {**t.__dict__, "ratio": t.ratio}

    report = {
        "tool": "mutmut", "version": version("mutmut"), "python": sys.version.split()[0],
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "started": started.isoformat(),
        "seconds": round(total_s, 1), "jobs": args.jobs, "sample": args.sample, "seed": args.seed,
        "groups": {g: {"seconds": round(seconds[g], 1), "modules": {m: counts(t) for m, t in r.tallies.items()}}
                   for g, r in results.items()},
        "overall": counts(overall), "failed_groups": failed,
        "survivors": [s for r in results.values() for s in r.survivors],
        "equivalents": [e for r in results.values() for e in r.equivalents],
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1) + "\n")
    lines = [f"# {report['command']}: {len(report['survivors'])} survivors (fingerprint, status, mutant, diff)"]
    for survivor in report["survivors"]:
        lines += ["", f"{survivor['fingerprint']} {survivor['status']} {survivor['mutant']}", survivor["diff"].rstrip()]
    args.report.with_suffix(".survivors.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())

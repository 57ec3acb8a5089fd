"""Reading one mutmut workspace's verdicts: per-module counts, survivors with their diffs, equivalents.

mutmut 3 keeps its verdicts beside each mutated file (``mutants/<path>.meta``, JSON: the exit code of the
test run per mutant name). A survivor's diff is what ``mutmut show`` prints. A survivor is matched to the
checked-in list of equivalent mutants (scripts/bench/mutation_equivalent.txt) by a fingerprint of its function and
diff, not by its name: names are numbered per function and shift when the function is edited.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

# mutmut's exit codes (mutmut.stats.status_by_exit_code), folded into what the ratio needs.
KILLED_CODES = {1, 3}  # a selected test failed; 3: pytest's internal error, also a failure
TIMEOUT_CODES = {36, 24, -24, 152, 255}  # past the time limit: a changed behaviour, counted as killed
CRASH_CODES = {-11}  # the test process crashed: counted as killed
SURVIVED_CODES = {0}
NO_TESTS_CODES = {5, 33}  # no selected test calls the function: a survivor (nothing checks it)


def status_of(exit_code: Optional[int]) -> str:
    """The verdict of one mutant from mutmut's exit code ("not checked": not run in this run)."""
    if exit_code is None:
        return "not checked"
    if exit_code in KILLED_CODES or exit_code in CRASH_CODES:
        return "killed"
    if exit_code in TIMEOUT_CODES:
        return "timeout"
    if exit_code in SURVIVED_CODES:
        return "survived"
    if exit_code in NO_TESTS_CODES:
        return "no tests"
    return "suspicious"


def module_of(mutant: str) -> str:
    """``edge_runtime.atomic_io.x_fsync_dir__mutmut_6`` -> ``edge_runtime/atomic_io.py``."""
    dotted = mutant.rsplit(".", 1)[0]
    return dotted.replace(".", "/") + ".py"


def mutant_names(workspace: Path, modules: Iterable[str]) -> List[str]:
    """Every mutant mutmut generated for ``modules`` in ``workspace`` (sorted: a stable base for sampling)."""
    names: List[str] = []
    for module in modules:
        meta = workspace / "mutants" / (module + ".meta")
        if meta.exists():
            names.extend(json.loads(meta.read_text())["exit_code_by_key"])
    return sorted(names)


def verdicts(workspace: Path, modules: Iterable[str]) -> Dict[str, Optional[int]]:
    """Mutant name -> exit code of its test run (None: not run)."""
    codes: Dict[str, Optional[int]] = {}
    for module in modules:
        meta = workspace / "mutants" / (module + ".meta")
        if meta.exists():
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    return codes


# Runs in the workspace (mutmut reads its settings from the current folder): the diffs of the mutants
# named on stdin, as ``mutmut show`` prints them, in one process (mutmut 3.8's own functions).
DIFFS_SCRIPT = """
import json, sys
from mutmut.__main__ import find_mutant
from mutmut.mutation.diff_apply import get_diff_for_mutant
names = json.load(sys.stdin)
json.dump({n: get_diff_for_mutant(n, path=find_mutant(n).path) for n in names}, sys.stdout)
"""


def mutant_diffs(workspace: Path, mutants: List[str]) -> Dict[str, str]:
    """Each mutant's unified diff against the original function (what ``mutmut show`` prints)."""
    if not mutants:
        return {}
    shown = subprocess.run([sys.executable, "-c", DIFFS_SCRIPT], cwd=workspace, input=json.dumps(mutants),
                           capture_output=True, text=True, check=False)
    if shown.returncode != 0:
        raise SystemExit(f"could not read the mutants' diffs in {workspace}:\n{shown.stderr[-2000:]}")
    return {name: diff.rstrip("\n") + "\n" for name, diff in json.loads(shown.stdout).items()}


def fingerprint(mutant: str, diff: str) -> str:
    """12 hex digits naming a mutation by its module, function and changed lines: stable when renumbered."""
    function = mutant.rsplit("__mutmut_", 1)[0]  # edge_runtime.atomic_io.x_fsync_dir
    changed = [line[0] + line[1:].strip() for line in diff.splitlines()
               if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return hashlib.sha256("\n".join([function, *changed]).encode()).hexdigest()[:12]


def load_equivalents(path: Path) -> Dict[str, str]:
    """Fingerprint -> reason, from lines ``<fingerprint> <mutant name> <reason...>`` (``#`` starts a comment)."""
    equivalents: Dict[str, str] = {}
    if not path.exists():
        return equivalents
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3:
            raise SystemExit(f"{path}: a line needs '<fingerprint> <mutant> <reason>': {raw!r}")
        equivalents[parts[0]] = parts[2]
    return equivalents


@dataclass
class ModuleTally:
    """One module's counts; equivalent mutants are out of the ratio."""

    total: int = 0
    killed: int = 0
    timeout: int = 0
    survived: int = 0
    no_tests: int = 0
    suspicious: int = 0
    equivalent: int = 0

    @property
    def counted(self) -> int:
        """Mutants in the ratio: the run ones, less the listed equivalents."""
        return self.killed + self.timeout + self.survived + self.no_tests + self.suspicious

    @property
    def ratio(self) -> Optional[float]:
        """Killed (time-outs included) over counted; None when nothing was counted."""
        return (self.killed + self.timeout) / self.counted if self.counted else None

    def add(self, other: ModuleTally) -> None:
        """Add another tally's counts into this one."""
        for name in ("total", "killed", "timeout", "survived", "no_tests", "suspicious", "equivalent"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class GroupResult:
    """One group's tallies per module, its survivors (diff included) and equivalents seen."""

    tallies: Dict[str, ModuleTally] = field(default_factory=dict)
    survivors: List[Dict[str, str]] = field(default_factory=list)
    equivalents: List[Dict[str, str]] = field(default_factory=list)


def tally_group(workspace: Path, modules: List[str], only: Optional[Iterable[str]],
                equivalents: Dict[str, str]) -> GroupResult:
    """Count the verdicts of ``only`` (all mutants when None) per module and diff every survivor."""
    codes = verdicts(workspace, modules)
    wanted = set(codes) if only is None else set(only)
    result = GroupResult(tallies={module: ModuleTally() for module in modules})
    lived = sorted(m for m in wanted if status_of(codes.get(m)) in ("survived", "no tests", "suspicious"))
    diffs = mutant_diffs(workspace, lived)
    for mutant in sorted(wanted):
        module = module_of(mutant)
        status = status_of(codes.get(mutant))
        if status == "not checked":
            continue
        tally = result.tallies[module]
        tally.total += 1
        if status in ("survived", "no tests", "suspicious"):
            diff = diffs[mutant]
            print_ = fingerprint(mutant, diff)
            entry = {"mutant": mutant, "module": module, "status": status, "fingerprint": print_, "diff": diff}
            if print_ in equivalents:
                tally.equivalent += 1
                result.equivalents.append({**entry, "reason": equivalents[print_]})
                continue
            result.survivors.append(entry)
        attribute = status.replace(" ", "_")
        setattr(tally, attribute, getattr(tally, attribute) + 1)
    return result

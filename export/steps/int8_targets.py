"""INT8 for each of a bundle's targets: search per scheme (targets with the same settings share one),
ship the choice or fall back loudly, and check every shipped INT8 file against the budget again.

The pipeline calls :meth:`Int8Targets.assert_within_budget` right before signing: a bundle below
its accuracy budget is never signed, whatever happened before.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from edge_runtime.bundle.writer import ArtifactSpec
from edge_runtime.config import DeviceConfig
from export.errors import ExportError
from export.samples import SampleSet
from export.steps import quantize
from export.steps.accuracy_budget import AccuracyBudget
from export.steps.held_out import HeldOut
from export.steps.quant_search import SearchResult, report_entry, search


@dataclass(frozen=True)
class SearchOptions:
    """The export options the INT8 search reads."""

    accuracy_budget: Optional[Dict[str, float]]
    max_trials: int
    latency_runs: int
    progress: bool


class Int8Targets:
    """INT8 work shared by a bundle's targets: one pre-processed model, held-out data, budget, searches."""

    def __init__(self, options: SearchOptions, calibration: SampleSet, evaluation: HeldOut, prepared: Path,
                 workdir: Path, fp32: Path, say: Callable[[str], None]) -> None:
        self.options, self.calibration, self.evaluation = options, calibration, evaluation
        self.prepared, self.workdir, self.fp32, self._say = prepared, workdir, fp32, say
        self.budget = AccuracyBudget.resolve(options.accuracy_budget, evaluation.samples.labels is not None)
        self.searches: Dict[Tuple[str, bool, str], SearchResult] = {}
        self.report: Dict[str, Any] = {}
        self.shipped: Dict[str, Tuple[Path, Dict[str, Any]]] = {}  # target -> (shipped INT8 file, metrics)

    @classmethod
    def open(cls, stack: contextlib.ExitStack, options: SearchOptions, calibration: SampleSet, evaluation: HeldOut,
             fp32: Path, say: Callable[[str], None]) -> Int8Targets:
        """Run FP32 on the held-out data and pre-process it in a workspace that ``stack`` removes."""
        evaluation.reference(fp32)
        workdir = stack.enter_context(quantize.workspace())
        prepared = quantize.prepare(fp32, workdir, say)
        return cls(options, calibration, evaluation, prepared, workdir, fp32, say)

    def run(self, config: DeviceConfig, staging: Path, artifacts: List[ArtifactSpec], notes: List[str]) -> str:
        """Search (or reuse a same-scheme search), ship the choice; return the target's precision."""
        settings = config.quantization
        key = (settings.scheme, settings.per_channel, settings.calibration_method)
        if key not in self.searches:
            self._say(f"{config.name}: INT8 {settings.scheme} search, budget {self.budget}, "
                               f"{len(self.calibration)} calibration samples, {len(self.evaluation.samples)} held out")
            self.searches[key] = search(
                self.prepared, self.fp32, self.workdir, settings, self.calibration, self.evaluation, self.budget,
                dynamic=not config.uses_tensorrt, max_trials=self.options.max_trials,
                latency_runs=self.options.latency_runs, progress=self.options.progress, label=config.name)
        result = self.searches[key]
        fallback = "fp16" if config.uses_tensorrt else "fp32"
        self.report[config.name] = report_entry(result, settings, len(self.calibration), self.budget,
                                                             self.evaluation.description(), fallback)
        if result.choice is None:
            message = (f"{config.name}: no INT8 candidate meets the accuracy budget {self.budget}: "
                       f"shipping {fallback.upper()} instead")
            notes.append(message)
            print(f"edge-export: WARNING: {message}", file=sys.stderr, flush=True)
            return fallback
        choice = result.choice
        model_file = f"onnx/{config.name}.int8.onnx"
        (staging / "onnx").mkdir(exist_ok=True)
        shutil.copyfile(choice.path, staging / model_file)
        artifacts.append(ArtifactSpec(model_file, "onnx", config.name, "int8"))
        if choice.cache_path is not None and choice.cache_path.is_file():
            calib_file = f"calib/{config.name}.calib.json"
            (staging / "calib").mkdir(exist_ok=True)
            shutil.copyfile(choice.cache_path, staging / calib_file)
            artifacts.append(ArtifactSpec(calib_file, "calib", config.name, "int8"))
        self.shipped[config.name] = (staging / model_file, choice.metrics)
        self._say(f"{config.name}: INT8 choice {choice.name} ({choice.latency_p50_ms} ms p50)")
        return "int8"

    def assert_within_budget(self) -> None:
        """Measure every shipped INT8 file again: a bundle below its budget is never signed."""
        for target, (path, _) in self.shipped.items():
            violations = self.budget.check(self.evaluation.measure(path))
            if violations:
                raise ExportError(f"{target}: the INT8 model breaks the accuracy budget {self.budget} "
                                  f"({'; '.join(violations)}); refusing to sign the bundle")

    def metadata(self) -> Dict[str, Any]:
        return {target: {"choice": entry["choice"], "scheme": entry["scheme"],
                         "metrics": self.shipped[target][1] if target in self.shipped else None}
                for target, entry in self.report.items()}

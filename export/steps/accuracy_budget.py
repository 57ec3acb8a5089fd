"""The accuracy budget an INT8 model must meet: ``--accuracy-budget`` parsed, defaulted and checked.

A spec is comma-separated ``metric=value``: ``top1-drop=0.5`` (points of top-1 lost vs FP32; needs
labels), ``cosine-mean=0.99`` and ``cosine-min=0.95`` (mean / worst per-sample cosine of the outputs
to FP32's), ``max-abs=0.05`` (largest absolute output difference to FP32). Every export has one:
with labels the default is ``top1-drop=1``, without ``cosine-mean=0.99,cosine-min=0.95``.

Metrics are checked under the names the search records (``top1_drop``, ``cosine_mean``,
``cosine_min``, ``max_abs``), each the worst over the evaluation modes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

from export.errors import ExportError

# flag name -> (metric key, "max": value may not exceed the limit | "min": may not fall below, valid range)
METRICS: Dict[str, Tuple[str, str, Tuple[float, float]]] = {
    "top1-drop": ("top1_drop", "max", (0.0, 100.0)),
    "cosine-mean": ("cosine_mean", "min", (-1.0, 1.0)),
    "cosine-min": ("cosine_min", "min", (-1.0, 1.0)),
    "max-abs": ("max_abs", "max", (0.0, math.inf)),
}
DEFAULT_WITH_LABELS = {"top1-drop": 1.0}
DEFAULT_WITHOUT_LABELS = {"cosine-mean": 0.99, "cosine-min": 0.95}


class BudgetSpecError(ValueError):
    """A malformed ``--accuracy-budget``; the message is one line."""


def parse_spec(text: str) -> Dict[str, float]:
    """Parse ``metric=value[,metric=value...]`` into {flag metric name: limit}; one-line errors."""
    limits: Dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        name, sep, value = part.partition("=")
        name = name.strip()
        if not sep or not name:
            raise BudgetSpecError(f"expected metric=value (e.g. top1-drop=0.5), got '{part}'")
        if name not in METRICS:
            raise BudgetSpecError(f"unknown metric '{name}' (known: {', '.join(METRICS)})")
        if name in limits:
            raise BudgetSpecError(f"metric '{name}' given twice")
        try:
            limit = float(value)
        except ValueError:
            raise BudgetSpecError(f"{name}: expected a number, got '{value.strip()}'") from None
        low, high = METRICS[name][2]
        if not low <= limit <= high:  # NaN fails this too
            raise BudgetSpecError(f"{name} must be between {low:g} and {high:g}, got {value.strip()}")
        limits[name] = limit
    return limits


@dataclass(frozen=True)
class AccuracyBudget:
    """Limits per metric (flag names as keys) that a quantized model must meet vs FP32."""

    limits: Mapping[str, float]

    @classmethod
    def resolve(cls, spec: Optional[Mapping[str, float]], has_labels: bool) -> AccuracyBudget:
        """The given limits, or the default for data with / without labels; top1-drop needs labels."""
        if spec is None:
            return cls(dict(DEFAULT_WITH_LABELS if has_labels else DEFAULT_WITHOUT_LABELS))
        if "top1-drop" in spec and not has_labels:
            raise ExportError("--accuracy-budget top1-drop needs labelled evaluation data (labels.json beside "
                              "the .npz samples, or a reference model's test split); use cosine-mean, "
                              "cosine-min or max-abs instead")
        return cls(dict(spec))

    def check(self, metrics: Mapping[str, Any]) -> List[str]:
        """Violations of the budget by ``metrics`` (metric key -> value), one line each; [] = within."""
        violations: List[str] = []
        for name, limit in self.limits.items():
            key, direction, _ = METRICS[name]
            value = metrics.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                violations.append(f"{name}: not measured")
            elif direction == "max" and value > limit:
                violations.append(f"{name} {value:.4g} > {limit:g}")
            elif direction == "min" and value < limit:
                violations.append(f"{name} {value:.4g} < {limit:g}")
        return violations

    def as_report(self) -> Dict[str, float]:
        """The budget for report.json: {"top1_drop": 0.5} or {"cosine_mean": 0.99, ...}."""
        return {METRICS[name][0]: limit for name, limit in self.limits.items()}

    def __str__(self) -> str:
        return ",".join(f"{name}={limit:g}" for name, limit in self.limits.items())

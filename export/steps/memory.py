"""A bundle's measured memory: what loading and running a model variant adds to a process's RSS.

Each shipped model file is measured in a fresh subprocess that does what the runtime does: import
ONNX Runtime, then (baseline taken here) read the file and create an ``InferenceSession`` from its
bytes, and run the largest batch the device configs allow (the representative sample tiled to
``batch.max``). The figure is the peak RSS after that minus the baseline, in MiB; the bundle records
the largest over its variants as ``metadata["memory_mb"]``, which the runtime's memory budget reads.
The peak is the kernel's high-water mark (``VmHWM``), reset after the baseline where Linux allows it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Mapping

import numpy as np

from export.errors import ExportError
from export.samples import Batch

TIMEOUT_S = 600

_CHILD = r"""
import json, os, resource, sys
import numpy as np
import onnxruntime as ort

def status_kb(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None

feed = dict(np.load(sys.argv[2]))
before = status_kb("VmRSS")
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
except OSError:
    pass
with open(sys.argv[1], "rb") as f:
    data = f.read()
options = ort.SessionOptions()
options.log_severity_level = 3
session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
del data
session.run(None, feed)
peak = status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"before_kb": before, "peak_kb": peak}))
"""


def tiled(feed: Batch, batch: int) -> Batch:
    """``feed`` (batch 1) repeated to ``batch`` rows."""
    return {name: np.repeat(array, batch, axis=0) for name, array in feed.items()}


def measure_file(model: Path, feed: Batch) -> float:
    """MiB that loading ``model`` from bytes and running ``feed`` adds to a fresh process's RSS."""
    with tempfile.TemporaryDirectory(prefix="edge-export-memory-") as tmp:
        feed_path = Path(tmp) / "feed.npz"
        np.savez(feed_path, **feed)  # type: ignore[arg-type]
        try:
            result = subprocess.run([sys.executable, "-c", _CHILD, str(model.resolve()), str(feed_path)],
                                    capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ExportError(f"measuring the memory of {model.name} took over {TIMEOUT_S} s") from exc
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExportError(f"measuring the memory of {model.name} failed: {last}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return max(0.0, (figures["peak_kb"] - figures["before_kb"]) / 1024.0)


def measure(models: Mapping[str, Path], feed: Batch, batch: int) -> Dict[str, float]:
    """Each model file's memory in MiB (rounded to 0.1) at ``batch`` rows of ``feed``, by bundle path."""
    big = tiled(feed, batch)
    return {name: round(measure_file(path, big), 1) for name, path in models.items()}


def bundle_memory(files: Mapping[str, Path], feed: Batch, batch: int) -> Dict[str, Any]:
    """The report's ``memory`` entry; ``memory_mb`` is the largest file's (the manifest records it)."""
    per_file = measure(files, feed, batch)
    return {"memory_mb": max(per_file.values()), "batch": batch, "per_file_mb": per_file,
            "method": "peak RSS of a fresh process loading the file from bytes (onnxruntime CPU) and running "
                      "the batch, minus its RSS before loading; export host"}

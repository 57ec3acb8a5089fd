"""TensorRT INT8 calibration caches for DLA targets, from ONNX Runtime's calibration ranges.

INT8 on DLA in TensorRT 8.x is implicit quantization: the builder takes per-tensor scales from
an ``IInt8EntropyCalibrator2`` whose ``read_calibration_cache`` hands back a cache, instead of
the Q/DQ scales of the GPU's explicit quantization. The export therefore computes per-tensor
ranges on the FP32 ONNX the device parses (so the tensor names are TensorRT's: its ONNX parser
names each tensor after the ONNX one), with the same samples and calibration method (minmax,
entropy, percentile) as ONNX Runtime's quantizer uses for the QDQ model, and writes them in
TensorRT's calibration cache format. The device's builder reads the cache and never calibrates.

The format (a text file), as TensorRT writes it and as public readers parse it:

    TRT-<version>-EntropyCalibration2
    <tensor name>: <scale as 8 hex digits>

- ``<version>`` is TensorRT's ``NV_TENSORRT_VERSION``: major*1000 + minor*100 + patch up to 8.x
  (8.5.2 → ``8502``; e.g. ``TRT-7103-EntropyCalibration2`` in onnxruntime's TensorRT execution
  provider, onnxruntime/core/providers/tensorrt/tensorrt_execution_provider_utils.h), and
  major*10000 + minor*100 + patch from 10.0 (10.3.0 → ``TRT-100300-EntropyCalibration2`` in a
  TrafficCamNet model card). TensorRT checks the header: a cache of another version or of another
  calibrator algorithm is refused (a TensorRT 10 build recalibrates from no data), so the header
  names the target's TensorRT version and the algorithm of the device's calibrator.
- the scale is the IEEE-754 float32 bit pattern, big-endian, in hex: onnxruntime's reader above
  (``ReadDynamicRange``: "tensor name : scale in 32-bit single precision IEEE754 format",
  dynamic range = scale * 127), and NVIDIA's TAO export code writing ``tensor_scale / 127.0``.
  The scale is symmetric: max(|min|, |max|) / 127 (TensorRT INT8 is symmetric, zero point 0).
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Dict, Mapping, Tuple

import numpy as np

from export.errors import ExportError
from export.samples import SampleSet
from export.steps import quantize

ALGORITHM = "EntropyCalibration2"  # the device's calibrator subclasses IInt8EntropyCalibrator2
INT8_MAX = 127.0
_MIN_SCALE = 1e-8  # a tensor that is always 0 still needs a non-zero scale
_HEADER = re.compile(r"TRT-(\d+)-(\w+)")
_LINE = re.compile(r"(.+): ([0-9a-f]{8})")

Ranges = Dict[str, Tuple[float, float]]


def version_number(tensorrt_version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION for a version string: '8.5.2.2' → 8502, '10.3.0' → 100300."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", tensorrt_version.strip())
    if not found:
        raise ExportError(f"cannot read the TensorRT version {tensorrt_version!r} for the calibration cache")
    major, minor, patch = (int(part or 0) for part in found.groups())
    if major >= 10:
        return major * 10000 + minor * 100 + patch
    return major * 1000 + minor * 100 + patch


def cache_header(tensorrt_version: str) -> str:
    """The cache's first line for ``tensorrt_version``, e.g. 'TRT-8502-EntropyCalibration2'."""
    return f"TRT-{version_number(tensorrt_version)}-{ALGORITHM}"


def scale_of(low: float, high: float) -> float:
    """The symmetric INT8 scale of a range: max(|low|, |high|) / 127, never 0."""
    return max(abs(low), abs(high), _MIN_SCALE * INT8_MAX) / INT8_MAX


def format_cache(ranges: Mapping[str, Tuple[float, float]], tensorrt_version: str) -> str:
    """The cache text for per-tensor (min, max) ranges, tensors in name order."""
    lines = [cache_header(tensorrt_version)]
    for name in sorted(ranges):
        low, high = ranges[name]
        if "\n" in name or not math.isfinite(low) or not math.isfinite(high):
            raise ExportError(f"calibration range of tensor {name!r} cannot go into a TensorRT cache: {low}, {high}")
        lines.append(f"{name}: {struct.pack('>f', scale_of(low, high)).hex()}")
    return "\n".join(lines) + "\n"


def parse_cache(text: str) -> Tuple[str, Dict[str, float]]:
    """A cache's header and per-tensor scales (the inverse of :func:`format_cache`, for checks)."""
    lines = text.splitlines()
    if not lines or not _HEADER.fullmatch(lines[0]):
        raise ExportError("not a TensorRT calibration cache: the first line is not TRT-<version>-<algorithm>")
    scales: Dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        found = _LINE.fullmatch(line)
        if not found:
            raise ExportError(f"TensorRT calibration cache line {number}: expected '<tensor>: <8 hex digits>'")
        scales[found.group(1)] = struct.unpack(">f", bytes.fromhex(found.group(2)))[0]
    return lines[0], scales


def compute_ranges(fp32_path: Path, samples: SampleSet, method: str, progress: bool = False) -> Ranges:
    """Per-tensor (min, max) of every float tensor of ``fp32_path`` with ONNX Runtime's calibrator."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    model = fp32_path.resolve()
    with quantize.workspace() as tmp:  # ORT's tools write into the current directory
        try:
            calibrator = create_calibrator(model, None, augmented_model_path=str(tmp / "augmented.onnx"),
                                           calibrate_method=methods[method])
            # the quantizer's reader: the same batches, one bucket per shape
            batch = quantize.fixed_batch(model, quantize.CALIBRATION_BATCH)
            calibrator.collect_data(quantize.calibration_reader(samples, batch, progress, "calibration cache"))
            data = calibrator.compute_data()
        except Exception as exc:  # ORT's calibrators raise bare Exception too; one line, traceback chained
            raise ExportError(f"TensorRT calibration cache: calibration failed: {quantize.one_line(exc)}") from exc
    # a range may come as a 1-element array (or one per channel): the tensor's extremes
    return {name: (float(np.min(item.range_value[0])), float(np.max(item.range_value[1])))
            for name, item in data.items()}


def write_cache(fp32_path: Path, samples: SampleSet, method: str, tensorrt_version: str, out_path: Path,
                progress: bool = False) -> int:
    """Calibrate ``fp32_path`` on ``samples`` and write the cache to ``out_path``; return the tensor count."""
    ranges = compute_ranges(fp32_path, samples, method, progress)
    if not ranges:
        raise ExportError(f"TensorRT calibration cache: no float tensor to calibrate in {fp32_path.name}")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(format_cache(ranges, tensorrt_version))
    return len(ranges)

"""Static INT8 quantization to a QDQ ONNX graph with ONNX Runtime's quantization tools, per target.

Two schemes, chosen by the device config's ``quantization.scheme``:

* ``u8s8-qdq`` (ONNX Runtime CPU): uint8 asymmetric activations, int8 per-channel weights.
  ORT's CPU kernels are fastest this way; int8 activations leave most convs in FP32 there.
* ``s8s8-qdq`` (TensorRT, explicit quantization): symmetric int8 activations and weights,
  zero points 0, weights kept as FP32 + Q/DQ pairs so TensorRT 8.5 through 10 can fold them.
  TensorRT's implicit-quantization calibrators are deprecated since 10.1; the QDQ graph
  carries the scales, so the engine build needs no calibrator.

``quant_pre_process`` runs first: it folds BatchNorm and infers shapes, which the
quantizer needs to place Q/DQ pairs well.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Dict, Optional

from tqdm import tqdm

from edge_runtime.config import QuantizationSettings
from export.errors import ExportError
from export.steps.calibrate import Batches, iter_batches

CALIBRATION_BATCH = 16


def _reader(batches: Batches, progress: bool, desc: str) -> Any:
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        """Feeds the checked calibration batches, with a progress bar."""

        def __init__(self) -> None:
            count = len(next(iter(batches.values())))
            self._bar = tqdm(total=count, desc=desc, unit="sample", disable=not progress, leave=False)
            self._it = iter_batches(batches, CALIBRATION_BATCH)

        def get_next(self) -> Optional[Dict[str, Any]]:
            batch = next(self._it, None)
            if batch is None:
                self._bar.close()
                return None
            self._bar.update(len(next(iter(batch.values()))))
            return batch

    return _Reader()


def _scheme_options(settings: QuantizationSettings) -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType

    if settings.scheme == "u8s8-qdq":
        return {"activation_type": QuantType.QUInt8, "weight_type": QuantType.QInt8, "extra_options": {}}
    if settings.scheme == "s8s8-qdq":
        return {
            "activation_type": QuantType.QInt8,
            "weight_type": QuantType.QInt8,
            "extra_options": {
                "ActivationSymmetric": True,
                "WeightSymmetric": True,
                "AddQDQPairToWeight": True,
            },
        }
    raise ExportError(f"unknown quantization scheme '{settings.scheme}'")


def quantize_int8(
    fp32_path: Path,
    out_path: Path,
    cache_path: Path,
    batches: Batches,
    settings: QuantizationSettings,
    *,
    progress: bool = True,
    desc: str = "calibrate",
) -> None:
    """Write a static INT8 QDQ model of ``fp32_path`` to ``out_path``; ranges to ``cache_path``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quant_pre_process, quantize_static

    methods = {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }
    with tempfile.TemporaryDirectory(prefix="edge-export-quant-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=False)
            quantize_static(
                str(prepared),
                str(out_path),
                _reader(batches, progress, desc),
                quant_format=QuantFormat.QDQ,
                per_channel=settings.per_channel,
                calibrate_method=methods[settings.calibration_method],
                calibration_cache_path=str(cache_path),
                **_scheme_options(settings),
            )
        except (ValueError, RuntimeError) as exc:
            raise ExportError(f"INT8 quantization failed: {exc}") from exc

"""The INT8 calibrator for DLA builds: it only hands TensorRT the bundle's calibration cache.

INT8 on DLA in TensorRT 8.x is implicit quantization: the builder takes activation ranges from a
calibrator, not from Q/DQ nodes. The export computed those ranges on the workstation and wrote them
as a TensorRT calibration cache (``calib/<target>.cache``), so this calibrator never feeds batches:
``read_calibration_cache`` returns the cache and ``get_batch`` has nothing. (GPU INT8 uses the Q/DQ
ONNX instead: no calibrator. Calibrators are deprecated since 10.1 but present in 8.5 and 10.x.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional

from edge_runtime.backends.tensorrt.api import TrtModule

if TYPE_CHECKING:
    import tensorrt


def make_cache_calibrator(trt: TrtModule, cache: bytes) -> tensorrt.IInt8EntropyCalibrator2:
    """An entropy calibrator (the one DLA requires) that reads ``cache`` and has no batches."""

    class _CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.cache_reads = 0

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: List[str]) -> Optional[List[int]]:
            return None  # no batches: the ranges come from the cache

        def read_calibration_cache(self) -> bytes:
            self.cache_reads += 1
            return cache

        def write_calibration_cache(self, data: bytes) -> None:
            pass  # the cache came from the signed bundle: nothing new to keep

    calibrator: tensorrt.IInt8EntropyCalibrator2 = _CacheCalibrator()
    return calibrator

"""One simulated Jetson per process: a fake ``pycuda.driver`` and a fake ``tensorrt`` sharing its memory.

``tests/trt_fakes/site`` holds ``tensorrt`` and ``pycuda`` packages that load these, so a real
``edge-runtime serve`` subprocess started with ``PYTHONPATH=tests/trt_fakes/site`` runs the TensorRT
backend end to end (choice, loader, builder, engine cache, runner, buffers) over a socket, with the
fakes standing in at the seam only. The simulated host is a Xavier: TensorRT 8.5.2, compute 7.2.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from trt_fakes.fake_pycuda import FakeCuda
from trt_fakes.fake_tensorrt import make_tensorrt

TRT_VERSION = os.environ.get("FAKE_TENSORRT_VERSION", "8.5.2.2")
_cuda: Optional[FakeCuda] = None
_trt: Optional[Any] = None


def cuda() -> FakeCuda:
    global _cuda
    if _cuda is None:
        _cuda = FakeCuda(capability=(7, 2))
        _cuda.calls = _NoLog()  # a server runs for long: keep no call log
    return _cuda


def tensorrt() -> Any:
    global _trt
    if _trt is None:
        _trt = make_tensorrt(TRT_VERSION, calls=_NoLog(), cuda_memory=cuda())
    return _trt


class _NoLog(list):  # type: ignore[type-arg]
    """A call log that keeps nothing."""

    def append(self, item: Any) -> None:
        pass

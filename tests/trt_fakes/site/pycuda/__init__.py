"""A fake ``pycuda`` for a simulated Jetson (tests only; see tests/trt_fakes/simulated_device.py)."""

import os as _os
import sys as _sys

_sys.path.insert(0, _os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))))))
from trt_fakes import simulated_device as _device

driver = _device.cuda()
_sys.modules["pycuda.driver"] = driver  # type: ignore[assignment]

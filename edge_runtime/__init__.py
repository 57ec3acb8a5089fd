"""edge-runtime: the device side of the edge inference runtime for NVIDIA Jetson (Python 3.8+).

Importing this package pulls in no optional dependency (no onnxruntime, tensorrt, pycuda, flask,
and never torch): each is imported by the module that needs it.
"""

__version__ = "0.1.0"

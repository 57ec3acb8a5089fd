"""Inference backends behind one small interface (see base.Backend); registry.create_backend picks one."""

from edge_runtime.backends.base import Backend, BackendOptions, check_inputs
from edge_runtime.backends.registry import available_backends, create_backend

__all__ = ["Backend", "BackendOptions", "available_backends", "check_inputs", "create_backend"]

"""Caps on what one inference request may ask of the server (DESIGN rule 7).

The body cap bounds memory before anything is parsed; the JSON depth cap bounds the work of
walking a document; the tensor caps bound what a shape may declare, so that a tiny request cannot
make the server allocate or validate an enormous tensor. The values come from the runtime
settings (``limits:`` in the YAML), whose dataclass this is.
"""

from __future__ import annotations

from edge_runtime.config.runtime import LimitSettings as RequestLimits

__all__ = ["RequestLimits"]

"""Caps on what one inference request may ask of the server (DESIGN rule 7).

The body cap bounds memory before anything is parsed; the JSON depth cap bounds the work of
walking a document; the tensor caps bound what a shape may declare, so that a tiny request cannot
make the server allocate or validate an enormous tensor.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RequestLimits:
    """Per-request caps; the defaults suit a Jetson with a few GiB of shared CPU/GPU memory."""

    max_request_bytes: int = 16 * 1024 * 1024
    max_json_depth: int = 64
    max_tensor_elements: int = 64 * 1024 * 1024
    max_dims: int = 8

"""The host fingerprint: what this machine is, as far as engines and bundles care.

Read from the places JetPack itself uses: ``/proc/device-tree/model`` (board name),
``/etc/nv_tegra_release`` (L4T release, e.g. ``# R35 (release), REVISION: 4.1`` → 35.4.1),
``/usr/local/cuda/version.json`` or ``version.txt`` (CUDA), and the Python packages that are
importable (onnxruntime, tensorrt). NVML does not exist on Jetson, so nothing here uses it.
``root`` lets tests point the readers at a fake filesystem tree.
"""

from __future__ import annotations

import importlib
import json
import platform
import re
from pathlib import Path
from typing import Dict, Optional

_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def jetson_model(root: Path = Path("/")) -> Optional[str]:
    """The board's name from the device tree, e.g. 'NVIDIA Jetson AGX Xavier Developer Kit'."""
    text = _read(root / "proc/device-tree/model")
    return text.strip("\x00\n ") if text else None


def l4t_release(root: Path = Path("/")) -> Optional[str]:
    """The L4T release as 'major.minor.patch' (R35, REVISION 4.1 → '35.4.1')."""
    text = _read(root / "etc/nv_tegra_release")
    match = _L4T.search(text or "")
    return f"{match.group(1)}.{match.group(2)}" if match else None


def cuda_version(root: Path = Path("/")) -> Optional[str]:
    """The CUDA toolkit version installed under /usr/local/cuda."""
    text = _read(root / "usr/local/cuda/version.json")
    if text:
        try:
            return str(json.loads(text)["cuda"]["version"])
        except (ValueError, KeyError, TypeError):
            pass
    match = re.search(r"CUDA Version ([\d.]+)", _read(root / "usr/local/cuda/version.txt") or "")
    return match.group(1) if match else None


def _module_version(name: str) -> Optional[str]:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    if getattr(module, "__file__", None) is None:
        return None  # a namespace package: e.g. tensorrt-stubs leaves a bare tensorrt/ folder behind
    return str(getattr(module, "__version__", "unknown"))


def host_fingerprint(root: Path = Path("/")) -> Dict[str, Optional[str]]:
    """Everything ``edge-runtime info`` prints; None where a fact is absent on this host."""
    return {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "jetson_model": jetson_model(root),
        "l4t": l4t_release(root),
        "cuda": cuda_version(root),
        "onnxruntime": _module_version("onnxruntime"),
        "tensorrt": _module_version("tensorrt"),
    }

"""What this machine is: the host part of the engine fingerprint, and what ``edge-runtime info`` prints.

Read from the places JetPack itself uses: ``/proc/device-tree/model`` (board name),
``/etc/nv_tegra_release`` (L4T release, e.g. ``# R35 (release), REVISION: 4.1`` → 35.4.1),
``/usr/local/cuda/version.json`` or ``version.txt`` (CUDA), and the Python packages that are
importable (onnxruntime, tensorrt, pycuda). NVML does not exist on Jetson, so nothing here uses it.
The compute capability comes from pycuda when it is installed, else from the Jetson family the
board name names (7.2 on Xavier, 8.7 on Orin); elsewhere it is unknown.
``root`` lets tests point the file readers at a fake filesystem tree.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import platform
import re
from pathlib import Path
from typing import Any, Dict, Optional

from edge_runtime.bundle.fingerprint import JETPACK_BY_L4T, HostFingerprint, device_family

log = logging.getLogger(__name__)

_L4T = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def jetson_model(root: Path = Path("/")) -> Optional[str]:
    """The board's name from the device tree, e.g. 'NVIDIA Jetson AGX Xavier Developer Kit'."""
    text = (_read(root / "proc/device-tree/model") or "").strip("\x00\n ")
    return text or None


def l4t_release(root: Path = Path("/")) -> Optional[str]:
    """The L4T release as 'major.minor.patch' (R35, REVISION 4.1 → '35.4.1')."""
    text = _read(root / "etc/nv_tegra_release")
    match = _L4T.search(text or "")
    if not match:
        return None
    revision = match.group(2).split(".")
    return ".".join([match.group(1), *revision, *["0"] * (2 - len(revision))])


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


def _real_module(name: str) -> Optional[Any]:
    try:
        module = importlib.import_module(name)
    except ImportError:
        return None
    if getattr(module, "__file__", None) is None:
        return None  # a namespace package: e.g. tensorrt-stubs leaves a bare tensorrt/ folder behind
    return module


def module_version(name: str) -> Optional[str]:
    """``__version__`` of an installed, real Python package; None when absent or without a version."""
    version = getattr(_real_module(name), "__version__", None)
    return str(version) if version is not None else None


def gpu_compute_capability() -> Optional[str]:
    """GPU 0's compute capability through pycuda, e.g. '7.2'; None without pycuda or a usable GPU."""
    if _real_module("pycuda") is None:
        return None
    try:
        import pycuda.driver as cuda
    except ImportError as exc:  # e.g. built against a CUDA that is gone
        log.debug("pycuda cannot be imported: %s", exc)
        return None
    try:
        cuda.init()
        major, minor = cuda.Device(0).compute_capability()
    except cuda.Error as exc:  # no driver, no device
        log.debug("pycuda cannot report the compute capability: %s", exc)
        return None
    return f"{major}.{minor}"


def host_fingerprint(root: Path = Path("/"), probe_gpu: bool = True) -> HostFingerprint:
    """This host's engine-relevant facts, compared with an engine's by ``fingerprint.match``.

    ``probe_gpu=False`` skips importing tensorrt and pycuda (tests, or a host known to have no GPU).
    """
    model = jetson_model(root)
    family = device_family(model)
    l4t = l4t_release(root)
    capability = gpu_compute_capability() if probe_gpu else None
    return HostFingerprint(
        tensorrt_version=module_version("tensorrt") if probe_gpu else None,
        compute_capability=capability or (family.compute_capability if family else None),
        l4t=l4t,
        jetpack=JETPACK_BY_L4T.get(l4t or ""),
        device_model=model,
        dla_cores=family.dla_cores if family else None,
    )


def host_facts(root: Path = Path("/"), probe_gpu: bool = True) -> Dict[str, Any]:
    """Everything ``edge-runtime info`` prints: the fingerprint plus platform, Python, CUDA and ORT."""
    facts: Dict[str, Any] = {
        "machine": platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    facts.update(dataclasses.asdict(host_fingerprint(root, probe_gpu)))
    facts["cuda"] = cuda_version(root)
    facts["onnxruntime"] = module_version("onnxruntime")
    return facts

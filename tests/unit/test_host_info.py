"""The host fingerprint readers, on fake Jetson filesystem trees and fake tensorrt/pycuda modules."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest

from edge_runtime.bundle.fingerprint import HostFingerprint
from edge_runtime.host_info import (
    cuda_version,
    gpu_compute_capability,
    host_facts,
    host_fingerprint,
    jetson_model,
    l4t_release,
    module_version,
)

XAVIER_NX = {
    "proc/device-tree/model": "NVIDIA Jetson Xavier NX Developer Kit\x00",
    "etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
    "usr/local/cuda/version.json": '{"cuda": {"name": "CUDA SDK", "version": "11.4.315"}}',
}


def _tree(root: Path, files: Dict[str, str]) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _fake_module(name: str, **attributes: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__file__ = f"/fake/{name}/__init__.py"
    for key, value in attributes.items():
        setattr(module, key, value)
    return module


def _fake_pycuda(monkeypatch: pytest.MonkeyPatch, capability: Optional[Tuple[int, int]]) -> None:
    """A pycuda whose GPU 0 has ``capability``; None: cuda.init() fails as with no driver."""

    class Error(Exception):
        pass

    class Device:
        def __init__(self, ordinal: int) -> None:
            assert ordinal == 0

        def compute_capability(self) -> Tuple[int, int]:
            assert capability is not None
            return capability

    def init() -> None:
        if capability is None:
            raise Error("cuInit failed: no CUDA-capable device is detected")

    driver = _fake_module("pycuda.driver", Error=Error, Device=Device, init=init)
    package = _fake_module("pycuda", driver=driver)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)


def test_jetson_xavier_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, {**XAVIER_NX, "proc/device-tree/model": "NVIDIA Jetson AGX Xavier Developer Kit\x00"})
    assert jetson_model(root) == "NVIDIA Jetson AGX Xavier Developer Kit"
    assert l4t_release(root) == "35.4.1"
    assert cuda_version(root) == "11.4.315"


@pytest.mark.parametrize("line, release", [
    ("# R36 (release), REVISION: 3.0, GCID: 36191598", "36.3.0"),
    ("# R36 (release), REVISION: 4, GCID: 1", "36.4.0"),
    ("garbage", None),
])
def test_l4t_release_is_always_three_parts(tmp_path: Path, line: str, release: Optional[str]) -> None:
    assert l4t_release(_tree(tmp_path, {"etc/nv_tegra_release": line + "\n"})) == release


def test_old_cuda_version_txt_and_absent_facts(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"usr/local/cuda/version.txt": "CUDA Version 10.2.89\n"})
    assert cuda_version(root) == "10.2.89"
    assert host_fingerprint(root, probe_gpu=False) == HostFingerprint()
    facts = host_facts(root, probe_gpu=False)
    assert facts["device_model"] is None and facts["l4t"] is None
    assert facts["python"] and facts["cuda"] == "10.2.89"


def test_host_part_read_from_a_xavier_nx_tree_without_gpu_libraries(tmp_path: Path) -> None:
    """No pycuda/TensorRT: compute capability and DLA cores come from the board's family."""
    fingerprint = host_fingerprint(_tree(tmp_path, XAVIER_NX), probe_gpu=False)
    assert fingerprint == HostFingerprint(
        tensorrt_version=None, compute_capability="7.2", l4t="35.4.1", jetpack="5.1.2",
        device_model="NVIDIA Jetson Xavier NX Developer Kit", dla_cores=2,
    )
    assert fingerprint.family is not None and fingerprint.family.name == "jetson-xavier-nx"


def test_real_tensorrt_and_pycuda_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_module("tensorrt", __version__="8.5.2.2"))
    _fake_pycuda(monkeypatch, (8, 7))  # pycuda's answer wins over the family table's 7.2
    fingerprint = host_fingerprint(_tree(tmp_path, XAVIER_NX))
    assert (fingerprint.tensorrt_version, fingerprint.compute_capability) == ("8.5.2.2", "8.7")
    facts = host_facts(tmp_path)
    assert (facts["tensorrt_version"], facts["compute_capability"], facts["dla_cores"]) == ("8.5.2.2", "8.7", 2)


def test_pycuda_without_a_gpu_falls_back_to_the_family(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_pycuda(monkeypatch, None)
    assert gpu_compute_capability() is None
    assert host_fingerprint(_tree(tmp_path, XAVIER_NX)).compute_capability == "7.2"


def test_namespace_package_is_not_a_real_module(monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorrt-stubs leave a bare tensorrt/ folder: importable, no __file__, not TensorRT."""
    namespace = types.ModuleType("tensorrt")
    namespace.__file__ = None
    monkeypatch.setitem(sys.modules, "tensorrt", namespace)
    monkeypatch.setitem(sys.modules, "pycuda", namespace)
    assert module_version("tensorrt") is None
    assert gpu_compute_capability() is None
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # None in sys.modules: import raises ImportError
    assert module_version("tensorrt") is None


def test_info_prints_the_fingerprint_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.cli import main

    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    fields = [item.name for item in dataclasses.fields(HostFingerprint)]
    assert [key for key in facts if key in fields] == fields
    assert {"machine", "platform", "python", "cuda", "onnxruntime"} <= set(facts)
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == list(facts)

"""choose_backend: which backend serves a device config's models on this host, and why."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import pytest

from edge_runtime.backends import choice
from edge_runtime.backends.choice import BackendChoice, choose_backend
from edge_runtime.backends.tensorrt import api
from edge_runtime.config import DeviceConfig, load_device_config
from edge_runtime.errors import BackendUnavailableError

TRT_MISSING = "the Python module 'tensorrt' is not installed: it comes with JetPack"
ORT_MISSING = "the Python module 'onnxruntime' is not installed: pip install 'edge-runtime[cpu]'"


def _probe(result: Optional[str], calls: Optional[List[str]] = None) -> Callable[[], Optional[str]]:
    def probe() -> Optional[str]:
        if calls is not None:
            calls.append("probe")
        return result

    return probe


def _xavier(device_configs_dir: Path, allow_fallback: bool) -> DeviceConfig:
    device = load_device_config(device_configs_dir / "agx-xavier.yaml")
    return dataclasses.replace(device, tensorrt=dataclasses.replace(device.tensorrt, allow_fallback=allow_fallback))


@pytest.fixture()
def fresh_cache() -> Iterator[None]:
    """Forget the per-process probe results before and after the test."""
    choice.tensorrt_problem.cache_clear()
    choice.onnxruntime_problem.cache_clear()
    yield
    choice.tensorrt_problem.cache_clear()
    choice.onnxruntime_problem.cache_clear()


@pytest.mark.parametrize("allow_fallback", [False, True])
def test_tensorrt_available_serves_with_tensorrt(device_configs_dir: Path, allow_fallback: bool) -> None:
    found = choose_backend(_xavier(device_configs_dir, allow_fallback), tensorrt_probe=_probe(None),
                           onnxruntime_probe=_probe(ORT_MISSING))
    assert found == BackendChoice("tensorrt", "tensorrt", "")
    assert not found.is_fallback


def test_tensorrt_missing_with_fallback_serves_with_onnxruntime_and_says_why(device_configs_dir: Path) -> None:
    found = choose_backend(_xavier(device_configs_dir, True), tensorrt_probe=_probe(TRT_MISSING),
                           onnxruntime_probe=_probe(None))
    assert (found.name, found.preferred, found.is_fallback) == ("onnxruntime", "tensorrt", True)
    assert "device config 'agx-xavier' (agx-xavier.yaml)" in found.reason
    assert TRT_MISSING in found.reason
    assert "allow_fallback: true" in found.reason
    assert "\n" not in found.reason and str(device_configs_dir) not in found.reason  # no directory: reaches clients


def test_tensorrt_missing_without_fallback_refuses_and_says_how_to_fix(device_configs_dir: Path) -> None:
    ort_calls: List[str] = []
    with pytest.raises(BackendUnavailableError) as refused:
        choose_backend(_xavier(device_configs_dir, False), tensorrt_probe=_probe(TRT_MISSING),
                       onnxruntime_probe=_probe(None, ort_calls))
    message = str(refused.value)
    assert refused.value.http_status == 503
    assert TRT_MISSING in message
    assert "install TensorRT and pycuda" in message
    assert "set tensorrt.allow_fallback: true in agx-xavier.yaml" in message
    assert "\n" not in message and str(device_configs_dir) not in message
    assert ort_calls == []


def test_tensorrt_and_onnxruntime_missing_refuses_naming_both(device_configs_dir: Path) -> None:
    with pytest.raises(BackendUnavailableError) as refused:
        choose_backend(_xavier(device_configs_dir, True), tensorrt_probe=_probe(TRT_MISSING),
                       onnxruntime_probe=_probe(ORT_MISSING))
    assert TRT_MISSING in str(refused.value) and "edge-runtime[cpu]" in str(refused.value)


def test_onnxruntime_preferred_and_present(device_configs_dir: Path) -> None:
    trt_calls: List[str] = []
    device = load_device_config(device_configs_dir / "x86-cpu.yaml")
    found = choose_backend(device, tensorrt_probe=_probe(TRT_MISSING, trt_calls), onnxruntime_probe=_probe(None))
    assert found == BackendChoice("onnxruntime", "onnxruntime", "")
    assert trt_calls == []  # a CPU device never imports tensorrt


def test_onnxruntime_preferred_and_missing_names_the_extra(device_configs_dir: Path) -> None:
    device = load_device_config(device_configs_dir / "x86-cpu.yaml")
    with pytest.raises(BackendUnavailableError, match=r"pip install 'edge-runtime\[cpu\]'"):
        choose_backend(device, onnxruntime_probe=_probe(ORT_MISSING))


def test_onnxruntime_probe_names_the_extra(monkeypatch: pytest.MonkeyPatch, fresh_cache: None) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # None in sys.modules: import raises ImportError
    assert choice.onnxruntime_problem() == ORT_MISSING


def test_the_tensorrt_probe_runs_once_per_process(monkeypatch: pytest.MonkeyPatch, fresh_cache: None,
                                                  device_configs_dir: Path) -> None:
    calls: List[str] = []
    monkeypatch.setattr(api, "unavailable_reason", _probe(TRT_MISSING, calls))
    device = _xavier(device_configs_dir, True)
    first, second = choose_backend(device), choose_backend(device)
    assert first == second and first.name == "onnxruntime"
    assert calls == ["probe"]


def test_the_default_tensorrt_probe_on_this_host(fresh_cache: None) -> None:
    """The real probe: None only where both tensorrt and pycuda import (a Jetson); else one line why."""
    problem = choice.tensorrt_problem()
    assert problem == api.unavailable_reason()
    assert problem is None or "\n" not in problem


def test_tensorrt_library_problems_says_which_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "pycuda.driver", None)
    problems = choice.tensorrt_library_problems()
    assert set(problems) == {"tensorrt", "pycuda"}
    assert "'tensorrt' is not installed" in (problems["tensorrt"] or "")
    assert "edge-runtime[tensorrt]" in (problems["pycuda"] or "")

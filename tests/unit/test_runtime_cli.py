"""The ``edge-runtime`` command line: keygen, check and info."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator, Tuple

import pytest

from edge_runtime.bundle import (
    ArtifactSpec,
    TargetInfo,
    TensorSpec,
    finalize_bundle,
    key_id,
    load_private_key,
    load_public_key,
)
from edge_runtime.cli import main


@pytest.fixture
def bundle(tmp_path: Path, keypair: Tuple[Path, Path]) -> Path:
    root = tmp_path / "bundle"
    (root / "engines").mkdir(parents=True)
    (root / "model.onnx").write_bytes(b"onnx")
    (root / "engines" / "orin-nano.plan").write_bytes(b"plan")
    finalize_bundle(
        root,
        name="digits",
        version="2.0.1",
        inputs=[TensorSpec("input", "float32", (-1, 1, 28, 28))],
        outputs=[TensorSpec("logits", "float32", (-1, 10))],
        source_model_sha256="cd" * 32,
        artifacts=[
            ArtifactSpec("model.onnx", "onnx"),
            ArtifactSpec("engines/orin-nano.plan", "engine", "orin-nano", "int8"),
        ],
        targets=[TargetInfo("orin-nano", "jetson-orin-nano", "tensorrt", "int8", "8.7", "8.6.2")],
        private_key=load_private_key(keypair[0]),
    )
    return root


def _error_line(stderr: str) -> str:
    """The one error line; fails on tracebacks or multi-line output."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("edge-runtime: error: ")
    return lines[0]


def test_keygen_prints_paths_and_key_id(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keygen", "--out", str(tmp_path / "keys"), "--name", "fleet"]) == 0
    out = capsys.readouterr().out
    pub = tmp_path / "keys" / "fleet.pub"
    assert str(tmp_path / "keys" / "fleet.key") in out
    assert str(pub) in out
    assert key_id(load_public_key(pub)) in out


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keygen", "--out", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["keygen", "--out", str(tmp_path)]) == 1
    line = _error_line(capsys.readouterr().err)
    assert "signing.key: already exists" in line


def test_check_ok(bundle: Path, keypair: Tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    assert main(["check", str(bundle), "--key", str(keypair[1])]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "OK" in captured.out
    assert "name:     digits" in captured.out
    assert "version:  2.0.1" in captured.out
    assert "orin-nano: jetson-orin-nano, tensorrt, int8" in captured.out
    assert "model.onnx" in captured.out
    assert "engines/orin-nano.plan" in captured.out


def test_check_accepts_any_of_several_keys(
    bundle: Path, keypair: Tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    other = str(tmp_path / "other" / "signing.pub")
    assert main(["check", str(bundle), "--key", other, "--key", str(keypair[1])]) == 0


def test_check_tampered_bundle(
    bundle: Path, keypair: Tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    (bundle / "engines" / "orin-nano.plan").write_bytes(b"PLAN")
    assert main(["check", str(bundle), "--key", str(keypair[1])]) == 1
    captured = capsys.readouterr()
    assert "engines/orin-nano.plan: sha256 mismatch" in _error_line(captured.err)
    assert "OK" not in captured.out


def test_check_untrusted_key(bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["keygen", "--out", str(tmp_path / "other")]) == 0
    capsys.readouterr()
    assert main(["check", str(bundle), "--key", str(tmp_path / "other" / "signing.pub")]) == 1
    assert "which is not trusted" in _error_line(capsys.readouterr().err)


def test_check_missing_key_file(
    bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["check", str(bundle), "--key", str(tmp_path / "absent.pub")]) == 1
    assert "absent.pub: no such key file" in _error_line(capsys.readouterr().err)


def test_check_not_a_bundle(
    tmp_path: Path, keypair: Tuple[Path, Path], capsys: pytest.CaptureFixture
) -> None:
    assert main(["check", str(tmp_path / "nothing"), "--key", str(keypair[1])]) == 1
    assert "nothing: does not exist" in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv",
    [[], ["check", "somewhere"], ["keygen"], ["frobnicate"]],
    ids=["no-command", "check-without-key", "keygen-without-out", "unknown-command"],
)
def test_usage_errors_exit_2(argv: list, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "usage: edge-runtime" in capsys.readouterr().err


def test_error_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    # the whole process's stderr, import-time warnings included (cryptography warns on Python 3.8)
    script = Path(sys.executable).with_name("edge-runtime")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "edge_runtime.cli"]
    result = subprocess.run(
        [*command, "check", str(tmp_path / "nothing"), "--key", str(tmp_path / "absent.pub")],
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).resolve().parents[2], check=False,
    )
    assert result.returncode == 1
    assert "absent.pub: no such key file" in _error_line(result.stderr)


# --- info: which backend serves ---------------------------------------------------------------


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A host where neither tensorrt nor pycuda imports (None in sys.modules: import raises ImportError)."""
    from edge_runtime.backends import choice

    for module in ("tensorrt", "pycuda", "pycuda.driver"):
        monkeypatch.setitem(sys.modules, module, None)
    choice.tensorrt_problem.cache_clear()
    yield
    choice.tensorrt_problem.cache_clear()


def _xavier_runtime(tmp_path: Path, device_configs_dir: Path, allow_fallback: bool) -> Path:
    text = (device_configs_dir / "agx-xavier.yaml").read_text()
    (tmp_path / "device.yaml").write_text(
        text.replace("allow_fallback: false", f"allow_fallback: {str(allow_fallback).lower()}"))
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text("device_config: device.yaml\ntrusted_keys: [unused.pub]\n")  # relative to the file
    return runtime


def test_info_says_whether_tensorrt_and_pycuda_import(no_tensorrt: None, capsys: pytest.CaptureFixture) -> None:
    assert main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    trt = next(line for line in lines if line.startswith("tensorrt:"))
    assert "not installed (the Python module 'tensorrt' is not installed" in trt
    pycuda = next(line for line in lines if line.startswith("pycuda:"))
    assert "not installed (" in pycuda and "edge-runtime[tensorrt]" in pycuda
    assert not any(line.startswith("backend") for line in lines)  # no --config: no choice to report


def test_info_with_a_config_says_which_backend_serves_and_why(
        no_tensorrt: None, tmp_path: Path, device_configs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    runtime = _xavier_runtime(tmp_path, device_configs_dir, allow_fallback=True)
    assert main(["info", "--json", "--config", str(runtime)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["device_config"] == str(tmp_path / "device.yaml")
    assert (facts["backend_preferred"], facts["backend"]) == ("tensorrt", "onnxruntime")
    assert "'tensorrt' is not installed" in facts["backend_note"]
    assert "allow_fallback: true" in facts["backend_note"]
    assert main(["info", "--config", str(runtime)]) == 0
    text = capsys.readouterr().out
    assert "backend_preferred:  tensorrt" in text and "backend:            onnxruntime" in text
    assert facts["backend_note"] in text


def test_info_with_a_config_that_cannot_serve_says_how_to_fix_it(
        no_tensorrt: None, tmp_path: Path, device_configs_dir: Path, capsys: pytest.CaptureFixture) -> None:
    runtime = _xavier_runtime(tmp_path, device_configs_dir, allow_fallback=False)
    assert main(["info", "--json", "--config", str(runtime)]) == 0  # info reports; it does not fail
    facts = json.loads(capsys.readouterr().out)
    assert facts["backend_preferred"] == "tensorrt" and facts["backend"] is None
    assert facts["backend_note"].startswith("models fail to load: ")
    assert "set tensorrt.allow_fallback: true in device.yaml" in facts["backend_note"]


def test_info_with_a_cpu_config_needs_no_note(tmp_path: Path, device_configs_dir: Path,
                                              capsys: pytest.CaptureFixture) -> None:
    runtime = tmp_path / "runtime.yaml"
    runtime.write_text(f"device_config: {device_configs_dir / 'x86-cpu.yaml'}\ntrusted_keys: [unused.pub]\n")
    assert main(["info", "--json", "--config", str(runtime)]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert (facts["backend_preferred"], facts["backend"], facts["backend_note"]) == ("onnxruntime", "onnxruntime",
                                                                                     None)


def test_info_with_a_missing_config_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["info", "--config", str(tmp_path / "absent.yaml")]) == 1
    assert "absent.yaml: cannot read file" in _error_line(capsys.readouterr().err)

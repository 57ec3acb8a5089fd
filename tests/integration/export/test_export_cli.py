"""edge-export's bad inputs: each exits non-zero with one clear line, no traceback, no output left."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np
import pytest


def _run(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.cli", "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


Case = Callable[[Path, Path, Path, Path], Tuple[List[str], str]]


def _good_config(configs: Path) -> str:
    return str(configs / "x86-cpu.yaml")


def _yaml(tmp: Path, text: str) -> str:
    path = tmp / "bad.yaml"
    path.write_text(text)
    return str(path)


def _npy(tmp: Path, array: np.ndarray) -> str:
    np.save(tmp / "calib.npy", array)
    return str(tmp / "calib.npy")


CASES = {
    "missing-onnx-file": lambda t, c, k, m: (["--model", str(t / "nope.onnx"), "--config", _good_config(c)],
                                             "ONNX file not found"),
    "bad-import-path": lambda t, c, k, m: (["--model", "no_such_pkg.models:build", "--input-shape", "3,8,8",
                                            "--config", _good_config(c)], "cannot import module 'no_such_pkg.models'"),
    "import-path-not-callable": lambda t, c, k, m: (["--model", "json:no_such_factory", "--input-shape", "3",
                                                     "--config", _good_config(c)], "is not a callable"),
    "unknown-reference-model": lambda t, c, k, m: (["--model", "mobilenet", "--config", _good_config(c)],
                                                   "unknown model 'mobilenet'"),
    "missing-weights": lambda t, c, k, m: (["--model", "export.models.digits_cnn:DigitsCNN", "--input-shape",
                                            "1,8,8", "--weights", str(t / "w.pt"), "--config", _good_config(c)],
                                           "weights file not found"),
    "wrong-calibration-shape": lambda t, c, k, m: (
        ["--model", str(m), "--config", _good_config(c), "--calib-data", _npy(t, np.zeros((4, 3, 8, 8), np.float32))],
        "axis 1 of a batch should be 1",
    ),
    "wrong-calibration-dtype": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c), "--calib-data",
                                                    _npy(t, np.zeros((4, 1, 8, 8), np.float64))], "is float64"),
    "onnx-needs-calibration": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c)],
                                                  "INT8 needs calibration data"),
    "prune-onnx": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c), "--prune", "structured:0.3"],
                                      "an .onnx input cannot be pruned"),
    "corrupt-yaml": lambda t, c, k, m: (["--model", str(m), "--config", _yaml(t, "name: [unclosed\n")],
                                        "bad.yaml"),
    "unknown-key-yaml": lambda t, c, k, m: (
        ["--model", str(m), "--config",
         _yaml(t, (c / "x86-cpu.yaml").read_text() + "\nturbo_mode: true\n")], "turbo_mode"),
    "missing-config": lambda t, c, k, m: (["--model", str(m), "--config", str(t / "none.yaml")], "none.yaml"),
    "unsupported-precision": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c), "--precision",
                                                  "fp16"], "precision 'fp16' is not supported"),
    "tensorrt-engine-not-available": lambda t, c, k, m: (["--model", str(m), "--config", str(c / "xavier-nx.yaml")],
                                                         "--skip-engine"),
    "missing-key": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c), "--key", str(t / "k.key")],
                                       "k.key"),
    "bad-prune-spec": lambda t, c, k, m: (["--model", str(m), "--config", _good_config(c), "--prune", "half"],
                                          "unknown pruning method"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_exits_with_one_clear_line(case: str, tmp_path: Path, device_configs_dir: Path,
                                             keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    args, message = CASES[case](tmp_path, device_configs_dir, keypair[0], tiny_onnx)
    out_parent = tmp_path / "out"
    out_parent.mkdir()
    if "--key" not in args:
        args += ["--key", str(keypair[0])]
    result = _run([*args, "--out", str(out_parent / "bundle")], tmp_path)
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge-export: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.stderr
    assert list(out_parent.iterdir()) == []  # no bundle, no staging directory left behind


def test_unwritable_output_location(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path],
                                    tiny_onnx: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    calib = _npy(tmp_path, np.zeros((4, 1, 8, 8), np.float32))
    result = _run(["--model", str(tiny_onnx), "--config", _good_config(device_configs_dir), "--calib-data", calib,
                   "--key", str(keypair[0]), "--out", str(blocker / "bundle")], tmp_path)
    assert result.returncode == 1
    assert result.stderr.startswith("edge-export: error: ") and "a-file" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_output_needs_force(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path],
                                     tiny_onnx: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    result = _run(["--model", str(tiny_onnx), "--config", _good_config(device_configs_dir), "--precision", "fp32",
                   "--key", str(keypair[0]), "--out", str(out)], tmp_path)
    assert result.returncode == 1 and "already exists" in result.stderr
    assert (out / "keep.txt").read_text() == "x"


def test_onnx_input_with_calibration_file_makes_a_bundle(tmp_path: Path, device_configs_dir: Path,
                                                         keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    calib = _npy(tmp_path, np.random.default_rng(0).random((32, 1, 8, 8)).astype(np.float32))
    out = tmp_path / "bundle"
    result = _run(["--model", str(tiny_onnx), "--config", _good_config(device_configs_dir), "--calib-data", calib,
                   "--key", str(keypair[0]), "--out", str(out), "--latency-runs", "5"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cosine" in result.stdout  # no labels: fidelity to FP32 is reported
    assert (out / "onnx" / "x86-cpu.int8.onnx").is_file()


def test_help_lists_the_main_options(tmp_path: Path) -> None:
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0
    for option in ("--model", "--prune", "--calib-data", "--config", "--key", "--skip-engine"):
        assert option in result.stdout


def test_fp16_for_a_tensorrt_target_records_the_precision(tmp_path: Path, device_configs_dir: Path,
                                                          keypair: Tuple[Path, Path], tiny_onnx: Path) -> None:
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.bundle.verify import verify_bundle

    out = tmp_path / "bundle"
    result = _run(["--model", str(tiny_onnx), "--config", str(device_configs_dir / "orin-nano.yaml"),
                   "--precision", "fp16", "--skip-engine", "--key", str(keypair[0]), "--out", str(out),
                   "--latency-runs", "3"], tmp_path)
    assert result.returncode == 0, result.stderr
    manifest = verify_bundle(out, [load_public_key(keypair[1])])
    assert [(t.name, t.backend, t.precision) for t in manifest.targets] == [("orin-nano", "tensorrt", "fp16")]
    # FP16 is a TensorRT builder flag: the bundle carries the FP32 ONNX, no INT8 model, no calibration
    assert {a.kind for a in manifest.artifacts} == {"onnx", "report"}

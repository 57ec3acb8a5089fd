"""Issue 14's bad inputs: each is one line, exit != 0, no traceback, nothing written, nothing deleted.

Also the happy side of two of them: an .onnx with external data exports into a bundle the
runtime serves, and --force still replaces a bundle.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import pytest

from export import cli


def _run(args: List[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "export.cli", "--quiet", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def _tree(root: Path) -> Dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"" for p in sorted(root.rglob("*"))}


def _assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode != 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edge-export: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.fixture()
def common(tmp_path: Path, device_configs_dir: Path, keypair: Tuple[Path, Path]) -> List[str]:
    return ["--config", str(device_configs_dir / "x86-cpu.yaml"), "--key", str(keypair[0]), "--precision", "fp32"]


def test_wrong_input_shape_for_a_factory_model_is_one_line_naming_the_flag(tmp_path: Path, common: List[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = _run(["--model", "export.models.digits_cnn:DigitsCNN", "--input-shape", "3,32,32", *common,
                   "--out", str(out / "bundle")], tmp_path)
    _assert_one_line_error(result, "--input-shape", "does not run on inputs")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("flag, value", [
    ("--seed", "-1"), ("--latency-runs", "0"), ("--latency-runs", "-1"), ("--calib-samples", "0"),
    ("--calib-samples", "-5"), ("--finetune-epochs", "-1"), ("--seed", "x"),
])
def test_numeric_flags_are_range_checked_at_parse_time(flag: str, value: str, tmp_path: Path, common: List[str],
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--model", "digits-cnn", *common, "--out", str(tmp_path / "bundle"), f"{flag}={value}"])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-export: error: ") and flag in err[0], err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args, fragment", [
    (["--input", "ids:batch,seq:int8"], "--input"),
    (["--input", "ids:batch,seq:int64", "--input-shape", "3"], "not allowed with"),
    (["--output", "y"], "--output"),
    (["--inputs", "missing.yaml"], "--inputs"),
])
def test_bad_io_flags_are_one_line(args: List[str], fragment: str, tmp_path: Path, common: List[str],
                                   capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["--model", "export.models.digits_cnn:DigitsCNN", *common, "--out", str(tmp_path / "b"), *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-export: error: ") and fragment in err[0], err


def test_input_flags_do_not_apply_to_an_onnx_model(tmp_path: Path, common: List[str],
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["--model", str(tmp_path / "m.onnx"), "--input-shape", "1,8,8", *common,
                     "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "applies to an import-path model only" in err[0]


def test_an_internal_error_is_one_line_and_debug_shows_the_traceback(
        tmp_path: Path, common: List[str], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    import export.pipeline

    def broken(request: object) -> None:
        raise ZeroDivisionError("a bug\nover two lines")

    monkeypatch.setattr(export.pipeline, "run_export", broken)
    argv = ["--model", "digits-cnn", *common, "--out", str(tmp_path / "b")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edge-export: internal error: ZeroDivisionError: a bug over two lines "
                   "(rerun with --debug for the traceback)"]
    assert cli.main([*argv, "--debug"]) == 2
    err_text = capsys.readouterr().err
    assert "Traceback" in err_text and err_text.strip().splitlines()[-1].startswith("edge-export: internal error")


# --- --force replaces a bundle or an empty directory, nothing else ------------------------------


def test_force_refuses_a_directory_that_is_not_a_bundle(tmp_path: Path, common: List[str], tiny_onnx: Path) -> None:
    precious = tmp_path / "photos"
    (precious / "2019").mkdir(parents=True)
    (precious / "2019" / "wedding.jpg").write_bytes(b"irreplaceable")
    before = _tree(tmp_path)
    result = _run(["--model", str(tiny_onnx), *common, "--force", "--out", str(precious)], tmp_path)
    _assert_one_line_error(result, "--force", "not a bundle")
    assert _tree(tmp_path) == before  # the file survives, and no staging directory is left


def test_force_refuses_a_file(tmp_path: Path, common: List[str], tiny_onnx: Path) -> None:
    target = tmp_path / "notes.txt"
    target.write_text("keep me")
    result = _run(["--model", str(tiny_onnx), *common, "--force", "--out", str(target)], tmp_path)
    _assert_one_line_error(result, "--force", "not a directory")
    assert target.read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_force_replaces_a_bundle_and_an_empty_directory(tmp_path: Path, common: List[str], tiny_onnx: Path) -> None:
    out = tmp_path / "bundle"
    out.mkdir()  # empty: replaced
    for _ in range(2):  # then a bundle: replaced
        result = _run(["--model", str(tiny_onnx), *common, "--force", "--latency-runs", "2", "--out", str(out)],
                      tmp_path)
        assert result.returncode == 0, result.stderr
        assert (out / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


# --- an .onnx with external data ---------------------------------------------------------------


def _with_external_data(source: Path, directory: Path) -> Path:
    import onnx

    directory.mkdir()
    model = onnx.load(str(source))
    path = directory / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    return path


def test_onnx_with_external_data_exports_and_the_runtime_serves_it(
        tmp_path: Path, common: List[str], tiny_onnx: Path, keypair: Tuple[Path, Path],
        device_configs_dir: Path) -> None:
    import onnxruntime as ort

    from edge_runtime.backends.base import BackendOptions
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.bundle.verify import open_bundle
    from edge_runtime.config import load_device_config

    model = _with_external_data(tiny_onnx, tmp_path / "src")
    assert (tmp_path / "src" / "ext.onnx.data").stat().st_size > 1000  # the weights really are outside
    work = tmp_path / "work"
    work.mkdir()
    source_before = _tree(tmp_path / "src")
    out = tmp_path / "out" / "bundle"
    out.parent.mkdir()
    result = _run(["--model", str(model), *common, "--latency-runs", "2", "--out", str(out)], work)
    assert result.returncode == 0, result.stderr
    assert list(work.iterdir()) == [] and _tree(tmp_path / "src") == source_before  # no data left behind
    assert sorted(p.name for p in out.parent.iterdir()) == ["bundle"]

    bundle = open_bundle(out, [load_public_key(keypair[1])])
    backend = OnnxRuntimeBackend()
    backend.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions(max_batch_size=4))
    try:
        x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
        (expected,) = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})
        np.testing.assert_allclose(backend.infer({"input": x})["output"], expected, rtol=1e-5, atol=1e-6)
    finally:
        backend.close()


def test_onnx_with_missing_external_data_is_one_line(tmp_path: Path, common: List[str], tiny_onnx: Path) -> None:
    model = _with_external_data(tiny_onnx, tmp_path / "src")
    (tmp_path / "src" / "ext.onnx.data").unlink()
    out = tmp_path / "out"
    out.mkdir()
    result = _run(["--model", str(model), *common, "--out", str(out / "bundle")], tmp_path)
    _assert_one_line_error(result, "external data file", "is missing")
    assert list(out.iterdir()) == []

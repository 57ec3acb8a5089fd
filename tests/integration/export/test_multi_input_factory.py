"""The factory route with two int64 inputs (token ids and a mask) and named dynamic axes, FP32.

The model is written as a module under tmp_path, imported by ``--model module:factory`` as a
user's own package would be. The bundle must verify, keep both inputs with their dtypes and
dynamic axes, and the runtime's ONNX Runtime backend must answer as torch does at two lengths.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Iterator, Tuple

import numpy as np
import pytest
import torch

from export import cli

MODEL_SOURCE = '''
import torch
from torch import nn


class MaskedMeanPool(nn.Module):
    """Embedding, mean over the unmasked positions, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.head = nn.Linear(16, 4)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.embed(ids)
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.head(pooled)


def build() -> nn.Module:
    torch.manual_seed(0)
    return MaskedMeanPool()
'''


@pytest.fixture()
def model_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    name = "edge_export_test_masked_pool"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / f"{name}.py").write_text(MODEL_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    yield name
    sys.modules.pop(name, None)


def _batch(rng: np.random.Generator, batch: int, length: int) -> Tuple[np.ndarray, np.ndarray]:
    ids = rng.integers(0, 50, (batch, length)).astype(np.int64)
    mask = np.ones((batch, length), np.int64)
    mask[0, length // 2:] = 0  # a padded row
    return ids, mask


def test_two_int64_inputs_export_fp32_and_serve_like_torch(
        tmp_path: Path, model_module: str, keypair: Tuple[Path, Path], device_configs_dir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.backends.base import BackendOptions
    from edge_runtime.backends.onnxruntime import OnnxRuntimeBackend
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.bundle.verify import open_bundle
    from edge_runtime.config import load_device_config

    out = tmp_path / "bundle"
    code = cli.main(["--quiet", "--model", f"{model_module}:build",
                     "--input", "ids:batch,seq:int64", "--input", "mask:batch,seq:int64", "--output", "logits",
                     "--precision", "fp32", "--config", str(device_configs_dir / "x86-cpu.yaml"),
                     "--key", str(keypair[0]), "--out", str(out), "--latency-runs", "2"])
    assert code == 0, capsys.readouterr().err

    bundle = open_bundle(out, [load_public_key(keypair[1])])
    manifest = bundle.manifest
    assert [(s.name, s.dtype, s.shape) for s in manifest.inputs] == [("ids", "int64", (-1, -1)),
                                                                     ("mask", "int64", (-1, -1))]
    assert [(s.name, s.dtype, s.shape) for s in manifest.outputs] == [("logits", "float32", (-1, 4))]

    reference = importlib.import_module(model_module).build().eval()
    backend = OnnxRuntimeBackend()
    backend.load(bundle, load_device_config(device_configs_dir / "x86-cpu.yaml"), BackendOptions(max_batch_size=4))
    try:
        rng = np.random.default_rng(1)
        for batch, length in ((2, 3), (3, 11)):
            ids, mask = _batch(rng, batch, length)
            with torch.no_grad():
                expected = reference(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
            got = backend.infer({"ids": ids, "mask": mask})["logits"]
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    finally:
        backend.close()


class _TwoOutputs(torch.nn.Module):
    """A float and a bool input; two outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3, 5)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y = self.proj(x) * keep.unsqueeze(-1).to(x.dtype)
        return y, y.sum(-1)


def test_several_outputs_are_named_and_every_one_is_checked(tmp_path: Path) -> None:
    import onnxruntime as ort

    from export.io_spec import model_io, parse_input
    from export.steps.onnx_export import check_parity, export_onnx, onnx_io_specs, parity_samples

    model = _TwoOutputs().eval()
    io = model_io([parse_input("x:batch,steps,3:float32"), parse_input("keep:batch,steps:bool")])
    export_onnx(model, io, tmp_path / "m.onnx")
    inputs, outputs = onnx_io_specs(tmp_path / "m.onnx")
    assert [(s.name, s.dtype, s.shape) for s in inputs] == [("x", "float32", (-1, -1, 3)), ("keep", "bool", (-1, -1))]
    assert [(s.name, s.shape) for s in outputs] == [("output_0", (-1, -1, 5)), ("output_1", (-1, -1))]
    assert check_parity(model, tmp_path / "m.onnx", parity_samples(model, io, seed=0)) < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    x, keep = np.ones((1, 9, 3), np.float32), np.zeros((1, 9), bool)
    assert [a.shape for a in session.run(None, {"x": x, "keep": keep})] == [(1, 9, 5), (1, 9)]

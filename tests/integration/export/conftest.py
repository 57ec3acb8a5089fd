"""Bundles exported once per session and shared by the export integration tests."""

from __future__ import annotations

from pathlib import Path
from typing import Tuple

import pytest
import torch

from edge_runtime.config import load_device_config
from export.models.digits_cnn import DigitsCNN
from export.pipeline import ExportRequest, ExportResult, run_export
from export.steps.onnx_export import export_onnx
from export.steps.prune import PruneSpec


def _export(out: Path, key: Path, configs: list, **kwargs: object) -> ExportResult:
    request = ExportRequest(model="digits-cnn", configs=configs, key_path=key, out=out,
                            latency_runs=10, progress=False, **kwargs)  # type: ignore[arg-type]
    return run_export(request)


@pytest.fixture(scope="session")
def digits_int8_bundle(tmp_path_factory: pytest.TempPathFactory, keypair: Tuple[Path, Path],
                       device_configs_dir: Path) -> ExportResult:
    """digits-cnn, INT8 for x86-cpu (U8S8) and AGX Xavier (S8S8, no engine) in one bundle."""
    configs = [load_device_config(device_configs_dir / n) for n in ("x86-cpu.yaml", "agx-xavier.yaml")]
    return _export(tmp_path_factory.mktemp("bundles") / "digits-int8", keypair[0], configs, skip_engine=True)


@pytest.fixture(scope="session")
def digits_pruned_bundle(tmp_path_factory: pytest.TempPathFactory, keypair: Tuple[Path, Path],
                         device_configs_dir: Path) -> ExportResult:
    """digits-cnn, 30 % structured pruning + fine-tuning, INT8 for x86-cpu."""
    configs = [load_device_config(device_configs_dir / "x86-cpu.yaml")]
    return _export(tmp_path_factory.mktemp("bundles") / "digits-pruned", keypair[0], configs,
                   prune=PruneSpec("structured", 0.3), finetune_epochs=5)


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained digits CNN as an .onnx file: the quickest model for the CLI's .onnx route."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "digits.onnx"
    export_onnx(DigitsCNN().eval(), (1, 8, 8), path)
    return path

"""The export pipeline: model → (prune) → ONNX → per-target INT8/FP16 → (engine) → report → signed bundle.

INT8 is accuracy-aware (export/steps/int8_targets.py, quant_search.py): candidates are measured on
held-out data against the accuracy budget, the fastest within it ships, else FP32/FP16 and a loud
note; every shipped INT8 file is measured again right before signing. The bundle records what was
tried and chosen (report.json ``quantization``) and the model's measured memory (``memory_mb``).

Everything is written into a staging directory beside the output and renamed into place
only when the bundle is complete and signed: a failure at any step leaves no half bundle.
Cheap checks (signing key, output location, precisions) run before any heavy work.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_runtime.atomic_io import publish_dir, staging_dir_for
from edge_runtime.bundle.manifest import Manifest, TargetInfo, TensorSpec
from edge_runtime.bundle.signing import load_private_key
from edge_runtime.bundle.verify import MANIFEST_NAME
from edge_runtime.bundle.writer import ArtifactSpec, finalize_bundle
from edge_runtime.config import DeviceConfig
from export.errors import CalibrationDataError, ExportError, OutputError, PruningError
from export.io_spec import ModelIO
from export.models.sources import ModelSource, resolve_model
from export.report import EvalSet, Variant, build_report, render_report
from export.samples import SampleSet, random_samples
from export.steps import calibrate, held_out, memory, onnx_export, quantize, trt_build
from export.steps.held_out import HeldOut
from export.steps.int8_targets import Int8Targets, SearchOptions
from export.steps.prune import PruneSpec, apply_pruning, count_macs_params
from export.text_data import TextEncoding

FP32_ONNX = "model.onnx"
EVAL_SAMPLES = 64  # calibration samples reused for the fidelity check when there are no labels
RANDOM_EVAL_SAMPLES = 16


@dataclass
class ExportRequest:
    """Everything one export needs; the CLI builds it from its arguments."""

    model: str
    configs: Sequence[DeviceConfig]
    key_path: Path
    out: Path
    weights: Optional[Path] = None
    input_shape: Optional[Tuple[int, ...]] = None  # one float32 input's sample shape (shorthand for io)
    io: Optional[ModelIO] = None  # an import-path model's inputs and output names (--input/--inputs/--output)
    precision: Optional[str] = None  # None: each target's default_precision
    prune: Optional[PruneSpec] = None
    finetune_epochs: int = 5
    calib_data: Optional[Path] = None
    calib_samples: Optional[int] = None  # None: the first target's calibration_samples
    skip_engine: bool = False
    force: bool = False
    name: Optional[str] = None
    version: str = "1"
    seed: int = 0
    latency_runs: int = 50
    progress: bool = True
    accuracy_budget: Optional[Dict[str, float]] = None  # parsed --accuracy-budget; None: the default
    max_trials: int = 12
    eval_data: Optional[Path] = None
    text: Optional[TextEncoding] = None  # --tokenizer: how .txt calibration/eval data becomes samples


@dataclass
class ExportResult:
    """The published bundle's path, its manifest and its report."""

    path: Path
    manifest: Manifest
    report: Dict[str, Any]

    def render(self) -> str:
        return render_report(self.report)


def _say(request: ExportRequest, message: str) -> None:
    if request.progress:
        print(f"[edge-export] {message}", file=sys.stderr, flush=True)


def _precision_for(request: ExportRequest, config: DeviceConfig) -> str:
    precision = request.precision or config.default_precision
    if precision not in config.precisions:
        raise ExportError(
            f"precision '{precision}' is not supported by target '{config.name}' "
            f"(supported: {', '.join(config.precisions)})"
        )
    if precision == "fp16" and not config.uses_tensorrt:
        raise ExportError(f"fp16 needs a TensorRT target; '{config.name}' uses {config.backend}")
    return precision


def _check_numbers(request: ExportRequest) -> None:
    """The numeric options' ranges (the CLI checks them too, at parse time)."""
    for name, value, low in (("--seed", request.seed, 0), ("--latency-runs", request.latency_runs, 1),
                             ("--finetune-epochs", request.finetune_epochs, 0),
                             ("--calib-samples", request.calib_samples, 1),
                             ("--max-trials", request.max_trials, 0)):
        if value is not None and value < low:
            raise ExportError(f"{name} must be >= {low}, got {value}")


def _check_replaceable(out: Path) -> None:
    """--force replaces a bundle (a directory with a manifest) or an empty directory, nothing else."""
    if out.is_symlink() or not out.is_dir():
        raise OutputError(f"--force replaces only a bundle directory, and {out} is not a directory: "
                          "remove it yourself or choose another --out")
    try:
        entries = {entry.name for entry in out.iterdir()}
    except OSError as exc:
        raise OutputError(f"cannot read {out}: {exc.strerror or exc}") from exc
    if entries and MANIFEST_NAME not in entries:
        raise OutputError(f"--force replaces only a bundle directory, and {out} is not a bundle (no "
                          f"{MANIFEST_NAME}): remove it yourself or choose another --out")


def _preflight(request: ExportRequest) -> None:
    _check_numbers(request)
    if not request.configs:
        raise ExportError("no device config given: pass --config FILE at least once")
    names = [c.name for c in request.configs]
    if len(set(names)) != len(names):
        raise ExportError(f"device config names must be unique, got {names}")
    for config in request.configs:
        _precision_for(request, config)
        if config.uses_tensorrt and not request.skip_engine:
            trt_build.ensure_available(config, _precision_for(request, config))
    if os.path.lexists(request.out):
        if not request.force:
            raise OutputError(f"output {request.out} already exists (pass --force to replace it)")
        _check_replaceable(request.out)


def run_export(request: ExportRequest) -> ExportResult:
    """Run the whole pipeline and publish the signed bundle at ``request.out``."""
    _preflight(request)
    private_key = load_private_key(request.key_path)
    try:
        request.out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output's parent {request.out.parent}: {exc.strerror or exc}") from exc
    staging = staging_dir_for(request.out)
    try:
        manifest, report = _build(request, staging, private_key)
        if os.path.lexists(request.out):
            _check_replaceable(request.out)  # again: it may have changed during the export
        publish_dir(staging, request.out, overwrite=request.force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _say(request, f"bundle written to {request.out}")
    return ExportResult(request.out, manifest, report)


def _prune(request: ExportRequest, source: ModelSource, compute: Dict[str, Any]) -> Any:
    """Prune (and fine-tune) the source module; return the unpruned copy for the report."""
    assert request.prune is not None and source.module is not None
    baseline = copy.deepcopy(source.module)
    macs_before, params_before = count_macs_params(source.module, source.io)
    _say(request, f"pruning: {request.prune.method} L1, ratio {request.prune.ratio}")
    apply_pruning(source.module, source.io, request.prune)
    epochs = request.finetune_epochs if source.data is not None else 0
    if source.data is not None and epochs:
        from export.models.training import train_classifier

        train_classifier(source.module, source.data.train_x, source.data.train_y, epochs=epochs,
                         lr=1e-3, seed=request.seed, desc="fine-tune", progress=request.progress)
    elif request.finetune_epochs:
        _say(request, "pruning: no training data for this model, so no fine-tuning")
    macs_after, params_after = count_macs_params(source.module, source.io)
    compute.update(pruning=f"{request.prune.method}:{request.prune.ratio}", finetune_epochs=epochs,
                   macs_before=macs_before, macs_after=macs_after,
                   params_before=params_before, params_after=params_after)
    return baseline


def _export_fp32(request: ExportRequest, source: ModelSource, path: Path) -> Dict[str, np.ndarray]:
    """Write the FP32 ONNX model to ``path`` (external data inlined); return the samples used for parity."""
    if source.onnx_path is not None:
        onnx_export.copy_onnx(source.onnx_path, path)
        return {}
    assert source.module is not None
    samples = (
        {source.io.inputs[0].name: source.data.test_x[:8]} if source.data is not None
        else onnx_export.parity_samples(source.module, source.io, request.seed)
    )
    onnx_export.export_onnx(source.module, source.io, path)
    diff = onnx_export.check_parity(source.module, path, samples)
    _say(request, f"onnx: opset {onnx_export.OPSET}, parity vs torch max abs diff {diff:.2e}")
    return samples


def _calibration(request: ExportRequest, source: ModelSource, inputs: Sequence[TensorSpec]) -> SampleSet:
    """The calibration samples (labels from labels.json when given): --calib-data, else the training split."""
    limit = request.calib_samples
    if limit is None:
        limit = request.configs[0].quantization.calibration_samples
    if request.calib_data is not None:
        return held_out.load_labelled(request.calib_data, inputs, limit, request.text)
    if source.data is not None and len(inputs) == 1:
        return calibrate.check_arrays({inputs[0].name: source.data.calibration(limit)}, inputs,
                                      f"{source.name} training split")
    raise CalibrationDataError(
        "INT8 needs calibration data: pass --calib-data (an .npz with one array per input, "
        "an .npy for a single-input model, or a directory of them)"
    )


def _test_split(source: ModelSource, inputs: Sequence[TensorSpec]) -> Optional[SampleSet]:
    if source.data is not None and len(inputs) == 1:
        return SampleSet.from_batched({inputs[0].name: source.data.test_x}, source.data.test_y)
    return None


def _eval_set(source: ModelSource, calibration: Optional[SampleSet], inputs: Sequence[TensorSpec]) -> EvalSet:
    """Without INT8: labelled held-out data when the model has some, else calibration samples, else random."""
    test = _test_split(source, inputs)
    if test is not None:
        return EvalSet(test, f"top-1 on the held-out split ({len(test)} samples)")
    if calibration is not None:
        samples = calibration.head(EVAL_SAMPLES)
        return EvalSet(samples, f"fidelity to FP32 on {len(samples)} calibration inputs (no labels)")
    samples = random_samples(inputs, RANDOM_EVAL_SAMPLES)
    return EvalSet(samples, f"fidelity to FP32 on {len(samples)} random inputs (no labels, no calibration data)")


def _target(request: ExportRequest, config: DeviceConfig, staging: Path, int8: Optional[Int8Targets],
            artifacts: List[ArtifactSpec], variants: List[Variant], notes: List[str]) -> TargetInfo:
    """Produce one target's artifacts and register them for the manifest and the report."""
    precision = _precision_for(request, config)
    model_file = FP32_ONNX
    if precision == "int8" and int8 is None:  # the FP32 graph has nothing to quantize
        precision = "fp32"
        notes.append(f"{config.name}: nothing to quantize: kept FP32 (no float MatMul/Gemm/Conv in the graph)")
        _say(request, f"{config.name}: nothing to quantize: kept FP32")
    if precision == "int8":
        assert int8 is not None
        precision = int8.run(config, staging, artifacts, notes)
        model_file = f"onnx/{config.name}.int8.onnx" if precision == "int8" else FP32_ONNX
    variants.append(Variant(f"{config.name} {precision}", staging / model_file, precision,
                            file=model_file, target=config.name))
    if config.uses_tensorrt:
        job = trt_build.TrtJob(config, precision, staging, FP32_ONNX, model_file,
                               int8.calibration if int8 is not None else None, request.skip_engine,
                               lambda message: _say(request, message), request.progress)
        return trt_build.add_target(job, artifacts, notes)
    return TargetInfo(name=config.name, device_class=config.device_class, backend=config.backend,
                      precision=precision, compute_capability=config.compute_capability,
                      tensorrt_version=config.tensorrt_version, jetpack=config.jetpack, l4t=config.l4t)


def _memory(request: ExportRequest, variants: Sequence[Variant], feed: Dict[str, np.ndarray]) -> Dict[str, Any]:
    """The shipped model files' measured memory at the largest batch the targets allow."""
    batch = quantize.fixed_batch(variants[0].path, max(config.batch.max for config in request.configs))
    files = {v.file: v.path for v in variants if v.file is not None}
    _say(request, f"memory: loading {len(files)} model file(s) at batch {batch}")
    return memory.bundle_memory(files, feed, batch)


def _build(request: ExportRequest, staging: Path, private_key: Any) -> Tuple[Manifest, Dict[str, Any]]:
    source = resolve_model(request.model, weights=request.weights, input_shape=request.input_shape,
                           io=request.io, seed=request.seed, progress=request.progress)
    _say(request, f"model: {source.name}, inputs {source.io}")
    if request.prune is not None and source.is_onnx:
        raise PruningError("pruning needs the PyTorch model; an .onnx input cannot be pruned (drop --prune)")
    staging = staging.resolve()  # the INT8 work runs with a temporary directory as the current one
    compute: Dict[str, Any] = {}
    variants: List[Variant] = []
    notes: List[str] = []
    with tempfile.TemporaryDirectory(prefix="edge-export-") as scratch_name:
        scratch = Path(scratch_name)
        if request.prune is not None:
            baseline = _prune(request, source, compute)
            onnx_export.export_onnx(baseline, source.io, scratch / "unpruned.onnx")
            variants.append(Variant("fp32 before pruning (not shipped)", scratch / "unpruned.onnx", "fp32"))
        elif source.module is not None:
            compute["macs"], compute["params"] = count_macs_params(source.module, source.io)
        _export_fp32(request, source, staging / FP32_ONNX)
        inputs, outputs = onnx_export.onnx_io_specs(staging / FP32_ONNX)
        variants.append(Variant("fp32", staging / FP32_ONNX, "fp32", file=FP32_ONNX))
        artifacts = [ArtifactSpec(FP32_ONNX, "onnx", None, "fp32")]
        needs_int8 = any(_precision_for(request, c) == "int8" for c in request.configs)
        # a graph without float MatMul/Gemm/Conv keeps FP32 on INT8 targets: no calibration asked
        quantizable = needs_int8 and quantize.has_quantizable_ops(staging / FP32_ONNX)
        data = _calibration(request, source, inputs) if quantizable or request.calib_data is not None else None
        int8: Optional[Int8Targets] = None
        with contextlib.ExitStack() as stack:
            if quantizable:
                assert data is not None
                eval_data = None if request.eval_data is None else held_out.load_labelled(request.eval_data, inputs,
                                                                                        text=request.text)
                calib, samples, where = held_out.held_out_set(eval_data, _test_split(source, inputs), data,
                                                              request.seed)
                options = SearchOptions(request.accuracy_budget, request.max_trials, request.latency_runs,
                                        request.progress)
                int8 = Int8Targets.open(stack, options, calib, HeldOut(samples, inputs, outputs, where),
                                        staging / FP32_ONNX, lambda message: _say(request, message))
            targets = [_target(request, c, staging, int8, artifacts, variants, notes) for c in request.configs]
        eval_set = (EvalSet(int8.evaluation.samples, int8.evaluation.description()) if int8 is not None
                    else _eval_set(source, data, inputs))
        _say(request, f"report: evaluating {len(variants)} variants, {request.latency_runs} latency rounds")
        report = build_report(model=source.name, variants=variants, eval_set=eval_set,
                              latency_runs=request.latency_runs, compute=compute, notes=notes,
                              progress=request.progress)
        report["memory"] = _memory(request, variants, eval_set.samples.representative())
    metadata: Dict[str, Any] = {"exporter": "edge-export", "pruning": compute.get("pruning"),
                                "memory_mb": report["memory"]["memory_mb"]}
    if int8 is not None:
        report["quantization"] = int8.report
        metadata["quantization"] = int8.metadata()
        int8.assert_within_budget()  # right before signing, on the files in the bundle
    (staging / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    artifacts.append(ArtifactSpec("report.json", "report"))
    manifest = finalize_bundle(
        staging, name=request.name or source.name, version=request.version, inputs=inputs, outputs=outputs,
        source_model_sha256=source.source_sha256, artifacts=artifacts, targets=targets,
        private_key=private_key, metadata=metadata,
    )
    return manifest, report

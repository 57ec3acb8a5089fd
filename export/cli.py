"""``edge-export``: turn a PyTorch (or ONNX) model into a signed bundle for one or more device targets."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence, Tuple

from edge_runtime.config import load_device_config
from edge_runtime.errors import EdgeRuntimeError
from export.steps.prune import PruneSpec

EPILOG = """examples:
  edge-export --model digits-cnn --config device_configs/x86-cpu.yaml --key keys/signing.key --out bundles/digits
  edge-export --model resnet18 --prune structured:0.3 --calib-data calib/ --config device_configs/x86-cpu.yaml \\
              --key keys/signing.key --out bundles/resnet18
  edge-export --model mypkg.models:build --weights w.pt --input-shape 3,224,224 ...
  edge-export --model model.onnx --calib-data calib.npz ...
"""


def _shape(text: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got '{text}'")
    return dims


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so that docs and tests can read it)."""
    parser = argparse.ArgumentParser(
        prog="edge-export",
        description="Prune, export to ONNX, quantize per target and write a signed bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="reference model (digits-cnn, resnet18), package.module:factory, or a .onnx file")
    parser.add_argument("--weights", type=Path, help="state_dict file for an import-path model")
    parser.add_argument("--input-shape", type=_shape, help="one sample's shape, e.g. 3,224,224 (import-path models)")
    parser.add_argument("--config", dest="configs", action="append", type=Path, required=True,
                        help="device config YAML; repeat for several targets in one bundle")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="override every target's default precision")
    parser.add_argument("--prune", metavar="METHOD:RATIO",
                        help="structured:0.3 (channel pruning, cuts FLOPs) or unstructured:0.3 "
                             "(zeroes weights; no speedup on Xavier)")
    parser.add_argument("--finetune-epochs", type=int, default=5,
                        help="fine-tuning epochs after pruning when training data exists (default 5)")
    parser.add_argument("--calib-data", type=Path, help=".npy/.npz file or directory of them")
    parser.add_argument("--calib-samples", type=int, help="calibration samples to use (default: from config)")
    parser.add_argument("--skip-engine", action="store_true",
                        help="for TensorRT targets: bundle the QDQ ONNX without building an engine")
    parser.add_argument("--key", type=Path, required=True, help="ed25519 signing key (edge-runtime keygen)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --out")
    parser.add_argument("--name", help="bundle name (default: the model's)")
    parser.add_argument("--version", default="1", help="bundle version (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed for training, data splits and samples")
    parser.add_argument("--latency-runs", type=int, default=50, help="timed runs per variant in the report")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: returns the exit status; errors are one line on stderr, no traceback."""
    args = build_parser().parse_args(argv)
    try:
        from export.pipeline import ExportRequest, run_export

        configs = [load_device_config(path) for path in args.configs]
        request = ExportRequest(
            model=args.model, configs=configs, key_path=args.key, out=args.out, weights=args.weights,
            input_shape=args.input_shape, precision=args.precision,
            prune=PruneSpec.parse(args.prune) if args.prune else None,
            finetune_epochs=args.finetune_epochs, calib_data=args.calib_data, calib_samples=args.calib_samples,
            skip_engine=args.skip_engine, force=args.force, name=args.name, version=args.version,
            seed=args.seed, latency_runs=args.latency_runs, progress=not args.quiet,
        )
        result = run_export(request)
    except EdgeRuntimeError as exc:
        print(f"edge-export: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-export: interrupted; no bundle written", file=sys.stderr)
        return 130
    print(result.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

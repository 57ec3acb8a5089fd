"""``edge-export``: turn a PyTorch (or ONNX) model into a signed bundle for one or more device targets."""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Callable, Dict, NoReturn, Optional, Sequence, Tuple

from edge_runtime.config import load_device_config
from edge_runtime.errors import EdgeRuntimeError
from export.io_spec import InputSpec, IoSpecError, ModelIO, load_spec_file, model_io, parse_input
from export.steps.accuracy_budget import BudgetSpecError, parse_spec
from export.steps.prune import PruneSpec
from export.text_data import DEFAULT_MAX_LENGTH, TOKENIZER_FIELDS, TextEncoding

EPILOG = """examples:
  edge-export --model digits-cnn --config device_configs/x86-cpu.yaml --key keys/signing.key --out bundles/digits
  edge-export --model resnet18 --prune structured:0.3 --calib-data calib/ --config device_configs/x86-cpu.yaml \\
              --key keys/signing.key --out bundles/resnet18
  edge-export --model mypkg.models:build --weights w.pt --input-shape 3,224,224 ...
  edge-export --model mypkg.text:encoder --input input_ids:batch,seq:int64 \\
              --input attention_mask:batch,seq:int64 --output embedding --precision fp32 ...
  edge-export --model model.onnx --calib-data calib.npz ...
  edge-export --model encoder.onnx --tokenizer tokenizer.json --calib-data lines.txt ...
"""


def _shape(text: str) -> Tuple[int, ...]:
    try:
        dims = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got '{text}'") from None
    if not dims or any(d <= 0 for d in dims):
        raise argparse.ArgumentTypeError(f"dimensions must be positive, got '{text}'")
    return dims


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


def _budget(text: str) -> Dict[str, float]:
    try:
        return parse_spec(text)
    except BudgetSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_budget.__name__ = "accuracy budget"


def _input(text: str) -> InputSpec:
    try:
        return parse_input(text)
    except IoSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--input: ")) from None


def _spec_file(text: str) -> ModelIO:
    try:
        return load_spec_file(Path(text))
    except IoSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--inputs: ")) from None


class _OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors as one line (exit 2), as every other edge-export error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (public so that docs and tests can read it)."""
    parser = _OneLineParser(
        prog="edge-export",
        description="Prune, export to ONNX, quantize per target and write a signed bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True,
                        help="reference model (digits-cnn, resnet18), package.module:factory, or a .onnx file")
    parser.add_argument("--weights", type=Path, help="state_dict file for an import-path model")
    inputs = parser.add_mutually_exclusive_group()
    inputs.add_argument("--input-shape", type=_shape,
                        help="one float32 input: one sample's shape, e.g. 3,224,224 (import-path models)")
    inputs.add_argument("--input", dest="inputs", action="append", type=_input, metavar="NAME:DIMS:DTYPE",
                        help="an import-path model's input, repeated in argument order: DIMS comma-separated, "
                             "ints or names of dynamic axes, the first the batch (input_ids:batch,seq:int64); "
                             "DTYPE float32, float16, int64, int32 or bool")
    inputs.add_argument("--inputs", dest="spec_file", type=_spec_file, metavar="FILE",
                        help="YAML: inputs: [{name: ids, shape: [batch, seq], dtype: int64}, ...], outputs: [...]")
    parser.add_argument("--output", dest="outputs", action="append", metavar="NAME",
                        help="name of an output, repeated in order (default: output, or output_0, output_1, ...)")
    parser.add_argument("--config", dest="configs", action="append", type=Path, required=True,
                        help="device config YAML; repeat for several targets in one bundle")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8"),
                        help="override every target's default precision")
    parser.add_argument("--prune", metavar="METHOD:RATIO",
                        help="structured:0.3 (channel pruning, cuts FLOPs) or unstructured:0.3 "
                             "(zeroes weights; no speedup on Xavier)")
    parser.add_argument("--finetune-epochs", type=_int_at_least(0), default=5,
                        help="fine-tuning epochs after pruning when training data exists (default 5)")
    parser.add_argument("--calib-data", type=Path,
                        help=".npz with one array per input name (N first), .npy for a single-input model, a "
                             "directory of them (one sample per file may vary in length), or a .txt file with "
                             "--tokenizer")
    parser.add_argument("--calib-samples", type=_int_at_least(1),
                        help="calibration samples to use, >= 1 (default: from config)")
    parser.add_argument("--eval-data", type=Path,
                        help="held-out data for the accuracy check, in --calib-data's formats (labels from "
                             "labels.json beside .npz samples); default: the model's test split, else 25 %% of the "
                             "calibration samples split off with --seed")
    parser.add_argument("--tokenizer", type=Path, metavar="FILE",
                        help="a Hugging Face tokenizers file (tokenizer.json): --calib-data/--eval-data may then be "
                             "a UTF-8 .txt file, one sample per non-blank line, unpadded and unlabelled, fed to the "
                             f"model's inputs named {', '.join(TOKENIZER_FIELDS)}")
    parser.add_argument("--max-length", type=_int_at_least(1), metavar="N",
                        help=f"most tokens per text sample, >= 1 (default {DEFAULT_MAX_LENGTH}; with --tokenizer)")
    parser.add_argument("--accuracy-budget", type=_budget, metavar="SPEC",
                        help="what INT8 may cost vs FP32 on held-out data, comma-separated metric=value: "
                             "top1-drop=0.5 (points; needs labels), cosine-mean=0.99, cosine-min=0.95, max-abs=0.05. "
                             "Default: top1-drop=1 with labels, else cosine-mean=0.99,cosine-min=0.95. No INT8 mix "
                             "within it: FP32 (FP16 on TensorRT) is shipped instead")
    parser.add_argument("--max-trials", type=_int_at_least(0), default=12,
                        help="most sensitivity-pass trials (INT8 nodes put back to float) per scheme, >= 0 "
                             "(default 12)")
    parser.add_argument("--skip-engine", action="store_true",
                        help="for TensorRT targets: build no engine here; the bundle carries the ONNX (and a DLA INT8 "
                             "target's calibration cache) and the device builds the engine at first load. Without "
                             "it, an engine is built only where TensorRT runs and this host matches the target")
    parser.add_argument("--key", type=Path, required=True, help="ed25519 signing key (edge-runtime keygen)")
    parser.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    parser.add_argument("--force", action="store_true",
                        help="replace an existing bundle (or empty directory) at --out; nothing else is replaced")
    parser.add_argument("--name", help="bundle name (default: the model's)")
    parser.add_argument("--version", default="1", help="bundle version (default 1)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="seed for training, data splits and samples")
    parser.add_argument("--latency-runs", type=_int_at_least(1), default=50,
                        help="timed runs per variant in the report, >= 1")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument("--debug", action="store_true", help="print the traceback of an error")
    return parser


def _model_io(args: argparse.Namespace) -> Optional[ModelIO]:
    """The inputs and outputs given by --input/--inputs/--input-shape and --output, if any."""
    io: Optional[ModelIO] = None
    if args.inputs:
        io = model_io(args.inputs)
    elif args.spec_file is not None:
        io = args.spec_file
    elif args.input_shape is not None:
        io = ModelIO.single(args.input_shape)
    if args.outputs:
        if io is None:
            raise IoSpecError("--output applies to an import-path model given with --input, --inputs "
                              "or --input-shape")
        io = io.with_outputs(args.outputs)
    return io


def _text_flags_error(args: argparse.Namespace) -> Optional[str]:
    """Why --tokenizer, --max-length and .txt data do not go together as given, if they do not."""
    texts = [(flag, path) for flag, path in (("--calib-data", args.calib_data), ("--eval-data", args.eval_data))
             if path is not None and path.suffix == ".txt"]
    if args.tokenizer is None:
        if texts:
            return f"{texts[0][0]} {texts[0][1]}: a text file needs --tokenizer FILE"
        if args.max_length is not None:
            return "--max-length applies with --tokenizer"
    elif not texts:
        return "--tokenizer applies to a .txt --calib-data or --eval-data"
    return None


def _text_encoding(args: argparse.Namespace) -> Optional[TextEncoding]:
    """The loaded --tokenizer (read before any heavy work), with skipped-line notices unless --quiet."""
    if args.tokenizer is None:
        return None

    def notice(message: str) -> None:
        if not args.quiet:
            print(f"[edge-export] {message}", file=sys.stderr, flush=True)

    return TextEncoding.load(args.tokenizer, args.max_length or DEFAULT_MAX_LENGTH, notice)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: returns the exit status; errors are one line on stderr, no traceback.

    A user's error exits 1 (a usage error 2, as argparse's); an unexpected one prints its type
    and message and exits 2, with the traceback under --debug.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        io = _model_io(args)
    except IoSpecError as exc:
        parser.error(str(exc))
    text_error = _text_flags_error(args)
    if text_error is not None:
        parser.error(text_error)
    try:
        return _run(args, io)
    except EdgeRuntimeError as exc:
        _traceback_if(args.debug)
        print(f"edge-export: error: {_one_line(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("edge-export: interrupted; no bundle written", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, or a library failing in a way not mapped yet: one line, --debug for more
        _traceback_if(args.debug)
        print(f"edge-export: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 2


def _traceback_if(debug: bool) -> None:
    if debug:
        traceback.print_exc()


def _run(args: argparse.Namespace, io: Optional[ModelIO]) -> int:
    from export.pipeline import ExportRequest, run_export

    configs = [load_device_config(path) for path in args.configs]
    request = ExportRequest(
        model=args.model, configs=configs, key_path=args.key, out=args.out, weights=args.weights,
        io=io, precision=args.precision,
        prune=PruneSpec.parse(args.prune) if args.prune else None,
        finetune_epochs=args.finetune_epochs, calib_data=args.calib_data, calib_samples=args.calib_samples,
        skip_engine=args.skip_engine, force=args.force, name=args.name, version=args.version,
        seed=args.seed, latency_runs=args.latency_runs, progress=not args.quiet,
        accuracy_budget=args.accuracy_budget, max_trials=args.max_trials, eval_data=args.eval_data,
        text=_text_encoding(args),
    )
    result = run_export(request)
    print(result.render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text calibration data: a .txt file plus a tokenizers tokenizer becomes unpadded, unlabelled samples."""

from __future__ import annotations

from pathlib import Path
from typing import List, Tuple

import numpy as np
import pytest

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError
from export.steps.calibrate import load_samples
from export.text_data import TextEncoding

VOCAB = {"[UNK]": 0, "[CLS]": 1, "[SEP]": 2, "the": 3, "cat": 4, "sat": 5, "on": 6, "mat": 7, "a": 8, "dog": 9}
WORDS = [w for w in VOCAB if not w.startswith("[")]
LINES = ["the cat sat", "", "a dog", "the cat sat on the mat", "dog"]  # one blank line: not a sample
INPUTS = [
    TensorSpec("input_ids", "int64", (-1, -1)),
    TensorSpec("attention_mask", "int32", (-1, -1)),
    TensorSpec("token_type_ids", "int64", (-1, -1)),
]


def _tokenizer(path: Path, special_tokens: bool = True, drop: str = "") -> Path:
    """A WordLevel tokenizer on whitespace, [CLS] $A [SEP] around each line; ``drop`` chars normalised away."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    if drop:
        tokenizer.normalizer = normalizers.Replace(drop, "")
    if special_tokens:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", VOCAB["[CLS]"]), ("[SEP]", VOCAB["[SEP]"])])
    tokenizer.save(str(path))
    return path


def _text(path: Path, lines: List[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def files(tmp_path: Path) -> Tuple[Path, Path]:
    return _tokenizer(tmp_path / "tokenizer.json"), _text(tmp_path / "lines.txt", LINES)


def test_each_non_blank_line_is_one_unpadded_sample_named_after_the_inputs(files: Tuple[Path, Path]) -> None:
    tokenizer, lines = files
    samples = load_samples(lines, INPUTS, text=TextEncoding.load(tokenizer))
    assert len(samples) == 4 and samples.labels is None  # the blank line is skipped; text has no labels
    assert samples.names == ("input_ids", "attention_mask", "token_type_ids")
    assert [s["input_ids"].dtype for s in samples.samples] == [np.dtype("int64")] * 4
    assert [s["attention_mask"].dtype for s in samples.samples] == [np.dtype("int32")] * 4  # the input's dtype
    assert [len(s["input_ids"]) for s in samples.samples] == [5, 4, 8, 3]  # natural lengths, [CLS] .. [SEP]
    first = samples.samples[0]
    assert first["input_ids"].tolist() == [1, 3, 4, 5, 2]
    assert first["attention_mask"].tolist() == [1] * 5 and first["token_type_ids"].tolist() == [0] * 5
    assert [len(b["input_ids"]) for b in samples.batches(8)] == [1, 1, 1, 1]  # batched by length, never padded


def test_only_the_inputs_the_model_has_are_fed_and_max_length_truncates(files: Tuple[Path, Path]) -> None:
    tokenizer, lines = files
    samples = load_samples(lines, INPUTS[:1], limit=3, text=TextEncoding.load(tokenizer, max_length=4))
    assert samples.names == ("input_ids",)
    assert [s["input_ids"].tolist() for s in samples.samples] == [[1, 3, 4, 2], [1, 8, 9, 2], [1, 3, 4, 2]]


def test_a_line_with_no_token_is_skipped_and_counted(tmp_path: Path) -> None:
    tokenizer = _tokenizer(tmp_path / "tokenizer.json", special_tokens=False, drop="~")
    lines = _text(tmp_path / "lines.txt", ["the cat", "~ ~~", "dog", "~"])
    notices: List[str] = []
    samples = load_samples(lines, INPUTS, text=TextEncoding.load(tokenizer, notice=notices.append))
    assert [s["input_ids"].tolist() for s in samples.samples] == [[3, 4], [9]]
    assert len(notices) == 1 and "skipped 2 line(s)" in notices[0] and str(lines) in notices[0]


def test_a_model_input_the_tokenizer_cannot_provide_is_one_line(files: Tuple[Path, Path]) -> None:
    tokenizer, lines = files
    inputs = [INPUTS[0], TensorSpec("pixel_values", "float32", (-1, 3, 8, 8))]
    with pytest.raises(CalibrationDataError) as info:
        load_samples(lines, inputs, text=TextEncoding.load(tokenizer))
    message = str(info.value)
    assert "'pixel_values'" in message and "input_ids, pixel_values" in message
    assert "input_ids, attention_mask, token_type_ids" in message and "\n" not in message


@pytest.mark.parametrize("spec, expected", [
    (TensorSpec("input_ids", "float32", (-1, -1)), "token arrays feed int64 or int32"),
    (TensorSpec("input_ids", "int64", (-1, 16)), "fixed sequence length 16"),
])
def test_inputs_text_cannot_feed_as_they_are_are_refused(files: Tuple[Path, Path], spec: TensorSpec,
                                                         expected: str) -> None:
    tokenizer, lines = files
    with pytest.raises(CalibrationDataError, match=expected):
        load_samples(lines, [spec], text=TextEncoding.load(tokenizer))


def test_a_text_file_without_a_tokenizer_or_with_a_bad_one_is_one_line(tmp_path: Path) -> None:
    lines = _text(tmp_path / "lines.txt", LINES)
    with pytest.raises(CalibrationDataError, match="--tokenizer"):
        load_samples(lines, INPUTS)
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(CalibrationDataError, match="cannot read tokenizer"):
        TextEncoding.load(bad)
    with pytest.raises(CalibrationDataError, match="not found"):
        TextEncoding.load(tmp_path / "missing.json")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(CalibrationDataError, match="not UTF-8"):
        load_samples(tmp_path / "latin1.txt", INPUTS, text=TextEncoding.load(_tokenizer(bad)))


@pytest.mark.parametrize("argv, expected", [
    (["--calib-data", "lines.txt"], "--tokenizer"),
    (["--eval-data", "held.txt"], "--tokenizer"),
    (["--tokenizer", "tokenizer.json"], "a .txt --calib-data or --eval-data"),
    (["--tokenizer", "tokenizer.json", "--calib-data", "lines.txt", "--max-length", "0"], "must be >= 1"),
    (["--max-length", "64"], "--max-length applies with --tokenizer"),
])
def test_text_flags_are_checked_before_any_work(argv: List[str], expected: str,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from export.cli import main

    with pytest.raises(SystemExit) as info:
        main(["--model", "m.onnx", "--config", "c.yaml", "--key", "k", "--out", "o", *argv])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and err.count("\n") == 1


@pytest.mark.slow  # builds and exports a one-layer BERT-style encoder
def test_edge_export_takes_a_text_file_and_a_tokenizer(tmp_path: Path, device_configs_dir: Path,
                                                      keypair: Tuple[Path, Path],
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from edge_runtime.bundle.signing import load_public_key
    from edge_runtime.bundle.verify import verify_bundle
    from export.cli import main
    from tests.export_models import bert_encoder as bert

    model = bert.export_onnx(bert.build(layers=1, hidden=32, heads=2), tmp_path / "enc.onnx")
    tokenizer = _tokenizer(tmp_path / "tokenizer.json")
    rng = np.random.default_rng(0)
    lines = _text(tmp_path / "lines.txt",
                  [" ".join(rng.choice(WORDS, int(rng.integers(1, 12)))) for _ in range(40)])
    out = tmp_path / "bundle"
    status = main(["--model", str(model), "--tokenizer", str(tokenizer), "--calib-data", str(lines),
                   "--precision", "fp32", "--config", str(device_configs_dir / "x86-cpu.yaml"),
                   "--key", str(keypair[0]), "--out", str(out), "--latency-runs", "2", "--quiet"])
    assert status == 0, capsys.readouterr().err
    manifest = verify_bundle(out, [load_public_key(keypair[1])])
    assert [spec.name for spec in manifest.inputs] == list(bert.INPUT_NAMES)
    assert "cosine" in capsys.readouterr().out  # unlabelled text: fidelity to FP32 is reported

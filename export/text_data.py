"""Text calibration and evaluation data: one sample per line of a UTF-8 file, encoded by a tokenizer.

``--tokenizer tokenizer.json`` (a Hugging Face ``tokenizers`` file) with ``--calib-data lines.txt``
(or ``--eval-data``): each non-blank line is one sample, encoded with the tokenizer's special tokens
and truncated at ``--max-length`` tokens, never padded: samples keep their natural lengths and
SampleSet batches them by length (a padded mask would spoil the calibrated ranges, see samples.py).
A line that encodes to no token is skipped, and a notice counts such lines.

A sample's arrays are named after the model's inputs by the usual convention: ``input_ids`` (the
ids), ``attention_mask`` (ones), ``token_type_ids`` (the type ids), each cast to the input's
integer dtype. A model input of another name cannot be fed from text: one line says so. Text
samples carry no labels, so the accuracy budget is the cosine to FP32.

``tokenizers`` belongs to the ``export`` extra and is imported here only, when text data is used.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from edge_runtime.bundle.manifest import TensorSpec
from export.errors import CalibrationDataError, ExportError
from export.samples import Sample, SampleSet

DEFAULT_MAX_LENGTH = 128
# model input name -> the tokenizers Encoding attribute that feeds it
TOKENIZER_FIELDS: Dict[str, str] = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "token_type_ids": "type_ids",
}
TOKEN_DTYPES = ("int64", "int32")

Notice = Callable[[str], None]


def _silent(message: str) -> None:
    """The default notice: say nothing."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def load_tokenizer(path: Path) -> Any:
    """A ``tokenizers.Tokenizer`` read from a ``tokenizer.json`` file; each failure is one line."""
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise ExportError("--tokenizer needs the 'tokenizers' package: pip install 'edge-runtime[export]'") from exc
    if not path.is_file():
        raise CalibrationDataError(f"tokenizer file not found: {path}")
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises plain Exception for a malformed file
        raise CalibrationDataError(f"cannot read tokenizer {path} (a tokenizers JSON file): {_one_line(exc)}") from exc


@dataclass(frozen=True)
class TextEncoding:
    """How a ``.txt`` file becomes samples: a loaded tokenizer, its file, the most tokens a sample keeps."""

    tokenizer: Any = field(repr=False)
    source: Path
    max_length: int = DEFAULT_MAX_LENGTH
    notice: Notice = field(default=_silent, repr=False, compare=False)

    @classmethod
    def load(cls, path: Path, max_length: int = DEFAULT_MAX_LENGTH, notice: Optional[Notice] = None) -> TextEncoding:
        """Read the tokenizer at ``path``; truncate at ``max_length`` tokens, never pad."""
        if max_length < 1:
            raise CalibrationDataError(f"--max-length must be at least 1, got {max_length}")
        tokenizer = load_tokenizer(path)
        tokenizer.no_padding()  # a tokenizer.json may ask for padding; samples keep natural lengths
        try:
            tokenizer.enable_truncation(max_length=max_length)
        except Exception as exc:  # e.g. a max_length the tokenizer's settings reject
            raise CalibrationDataError(f"tokenizer {path}: cannot truncate at {max_length}: {_one_line(exc)}") from exc
        return cls(tokenizer, path, max_length, notice or _silent)

    def samples(self, path: Path, inputs: Sequence[TensorSpec], limit: Optional[int] = None) -> SampleSet:
        """One unlabelled sample per non-blank line of ``path`` (the first ``limit``), for ``inputs``."""
        fields = _fields(inputs)
        samples: List[Sample] = []
        empty = 0
        for number, line in _lines(path):
            if limit is not None and len(samples) >= limit:
                break
            encoding = self._encode(line, path, number)
            if not encoding.ids:
                empty += 1
                continue
            samples.append({spec.name: np.asarray(getattr(encoding, fields[spec.name]), spec.dtype)
                            for spec in inputs})
        if empty:
            self.notice(f"{path}: skipped {empty} line(s) that encode to no token")
        if not samples:
            raise CalibrationDataError(f"{path}: no line of text to use as a sample")
        return SampleSet(tuple(samples))

    def _encode(self, line: str, path: Path, number: int) -> Any:
        try:
            return self.tokenizer.encode(line)
        except Exception as exc:  # tokenizers' errors are plain Exceptions
            raise CalibrationDataError(
                f"{path}:{number}: the tokenizer {self.source} failed: {_one_line(exc)}") from exc


def _lines(path: Path) -> List[Tuple[int, str]]:
    """(line number, text) of each non-blank line; a byte-order mark is dropped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError as exc:
        raise CalibrationDataError(f"calibration data not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise CalibrationDataError(f"{path} is not UTF-8 text: {exc.reason} at byte {exc.start}") from exc
    except OSError as exc:
        raise CalibrationDataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return [(number, line) for number, line in enumerate(text.splitlines(), start=1) if line.strip()]


def _fields(inputs: Sequence[TensorSpec]) -> Dict[str, str]:
    """Input name -> Encoding attribute, after checking that text can feed every input as it is."""
    names = ", ".join(spec.name for spec in inputs)
    for spec in inputs:
        if spec.name not in TOKENIZER_FIELDS:
            raise CalibrationDataError(
                f"model input '{spec.name}' cannot be fed from text: the model's inputs are {names}; "
                f"a tokenizer provides {', '.join(TOKENIZER_FIELDS)}")
        if spec.dtype not in TOKEN_DTYPES:
            raise CalibrationDataError(
                f"model input '{spec.name}' is {spec.dtype}; token arrays feed {' or '.join(TOKEN_DTYPES)} inputs")
        if len(spec.shape) != 2:
            raise CalibrationDataError(
                f"model input '{spec.name}' has shape {spec.shape}; text feeds [batch, sequence] inputs")
        if spec.shape[1] > 0:
            raise CalibrationDataError(
                f"model input '{spec.name}' has a fixed sequence length {spec.shape[1]}; text samples keep "
                "their natural lengths (export the model with a dynamic sequence axis, or pass .npz samples)")
    return {spec.name: TOKENIZER_FIELDS[spec.name] for spec in inputs}

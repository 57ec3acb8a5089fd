"""A small BERT-style sentence encoder from a ``transformers`` config: random weights, nothing downloaded.

``BertModel`` built from a :class:`transformers.BertConfig` object (4 layers, hidden 128, 4 heads,
vocab 1000, eager attention so the classic ONNX exporter traces the standard additive mask), wrapped
to return the masked mean of the last hidden states: one ``[batch, hidden]`` embedding per sequence.
The ONNX graph has the three int64 inputs of a real BERT export, ``input_ids``, ``attention_mask``,
``token_type_ids`` (``[batch, sequence]``, both axes dynamic), and the output ``embedding``.

No labels: the accuracy metric is the cosine to FP32. Samples are natural-length token sequences
(lengths 8..48, id 0 = ``[PAD]`` never drawn, 101/102 as ``[CLS]``/``[SEP]``, two segments).
Sample folders: :func:`write_npz_samples` (format in ``tests/export_models``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np
import torch
from torch import nn

from tests.export_models import write_npz_samples as _write_npz_dir

VOCAB = 1000
CLS_ID = 101
SEP_ID = 102
MIN_LEN = 8
MAX_LEN = 48
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OUTPUT_NAME = "embedding"
DEFAULT_SEED = 0

Sample = Dict[str, np.ndarray]  # input name -> int64 [sequence]


class MeanPooledBert(nn.Module):
    """``BertModel`` whose output is the attention-masked mean of its last hidden states."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        keep = attention_mask.to(hidden.dtype)[..., None]
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1.0)


def build(seed: int = DEFAULT_SEED, layers: int = 4, hidden: int = 128, heads: int = 4) -> MeanPooledBert:
    """The encoder with random (seeded) weights, in eval mode."""
    from transformers import BertConfig, BertModel

    options: Dict[str, Any] = {"attn_implementation": "eager"}  # not in BertConfig's typed signature
    config = BertConfig(
        vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
        intermediate_size=4 * hidden, max_position_embeddings=128, **options,
    )
    torch.manual_seed(seed)
    return MeanPooledBert(BertModel(config, add_pooling_layer=False)).eval()


def make_samples(n: int, seed: int) -> List[Sample]:
    """``n`` natural-length samples ``[CLS] a.. [SEP] b.. [SEP]`` with segment ids, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    samples: List[Sample] = []
    for _ in range(n):
        length = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        split = int(rng.integers(2, length - 2))  # position of the first [SEP]
        ids = rng.integers(SEP_ID + 1, VOCAB, size=length).astype(np.int64)
        ids[0], ids[split], ids[-1] = CLS_ID, SEP_ID, SEP_ID
        segments = np.zeros(length, np.int64)
        segments[split + 1 :] = 1
        samples.append({"input_ids": ids, "attention_mask": np.ones(length, np.int64), "token_type_ids": segments})
    return samples


def pad_batch(samples: Sequence[Sample]) -> Dict[str, np.ndarray]:
    """Pad samples to the batch's longest with zeros (mask 0): an ONNX Runtime feed."""
    width = max(len(s["input_ids"]) for s in samples)
    feeds = {name: np.zeros((len(samples), width), np.int64) for name in INPUT_NAMES}
    for row, sample in enumerate(samples):
        for name in INPUT_NAMES:
            feeds[name][row, : len(sample[name])] = sample[name]
    return feeds


@torch.no_grad()
def embed(model: nn.Module, samples: Sequence[Sample]) -> np.ndarray:
    """Torch embeddings of the samples as one padded batch."""
    feeds = pad_batch(samples)
    return model(*(torch.from_numpy(feeds[name]) for name in INPUT_NAMES)).numpy()


def export_onnx(model: nn.Module, path: Path, opset: int = 17) -> Path:
    """Export with the classic exporter: three int64 inputs, dynamic batch and sequence axes."""
    feeds = pad_batch(make_samples(2, seed=1))
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        model.eval(), tuple(torch.from_numpy(feeds[name]) for name in INPUT_NAMES), str(path),
        opset_version=opset, dynamo=False, input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
        dynamic_axes={**{name: axes for name in INPUT_NAMES}, OUTPUT_NAME: {0: "batch"}},
    )
    return path


def write_npz_samples(directory: Path, samples: Sequence[Sample]) -> List[Path]:
    """One ``.npz`` per sample (the three inputs, no batch axis, natural length); no labels."""
    return _write_npz_dir(directory, samples)

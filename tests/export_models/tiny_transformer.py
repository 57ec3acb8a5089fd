"""A small transformer encoder classifier, defined by hand, and the synthetic task it is trained on.

The model: token embedding (padding id 0) + learned positional embedding, 2 post-LayerNorm encoder
layers (multi-head self-attention, GELU feed-forward), masked mean pooling, a linear head. Inputs are
``input_ids`` and ``attention_mask``, both int64 ``[batch, sequence]``; the mask is applied the
standard (BERT) way, as an additive ``finfo(float32).min`` on the attention scores of padded keys.
That additive path is what static INT8 calibration gets wrong (issue 14), so it is kept explicit.

The task: each sequence (length 8..32) holds filler tokens and exactly one ``A`` and one ``B``; the
label is 1 when ``A`` comes before ``B``. Solving it needs attention and positions, not a bag of
words. Samples are natural-length (mask all ones); batches are padded with id 0 / mask 0.

Sample folders for the export CLI: :func:`write_npz_samples` (format in ``tests/export_models``).
:func:`trained` takes ~9 s on 2 cores, so the factory caches the weights in the temp dir, keyed by
seed, torch version and this file's source.

Measured with ONNX Runtime 1.32 alone (opset 17, U8S8 per-channel QDQ, MinMax, calibration one batch
per natural length, 4000 held-out samples, top-1 drop in points vs FP32), seeds 0..5:

* static QDQ on every default op, evaluated on padded mixed-length batches: 0.30, -0.05, 11.45,
  0.88, 0.12, 1.05. The mask's additive ``finfo.min`` never occurs in natural-length calibration, so
  its Mul/Add are calibrated to ~0 and padded keys are no longer masked at inference; leaving just
  that path (mask Mul + the 2 attention Adds) in FP32 takes seed 2 from 11.45 to 0.00. Evaluated
  per length (no padding) the same models drop <= 0.25: LayerNorm/Softmax/residual INT8 alone cost little.
* static QDQ on every default op, calibrated on padded batches: 47-50 (chance) on every seed.
* static QDQ on MatMul only, dynamic INT8 (MatMul): <= 0.12 on every seed.

``DEFAULT_SEED`` is 2, the seed where naive static INT8 breaks a 0.5-point budget most clearly
(FP32 99.83 %); on about half the seeds it breaks only through padded calibration.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from tests.export_models import write_npz_samples as _write_npz_dir

VOCAB = 32
PAD_ID = 0
TOKEN_A = 1
TOKEN_B = 2
MIN_LEN = 8
MAX_LEN = 32
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"
DEFAULT_SEED = 2  # see the module docstring for why this seed
TRAIN_SAMPLES = 4096
TRAIN_EPOCHS = 12

Sample = Tuple[np.ndarray, np.ndarray, int]  # ids [L] int64, mask [L] int64, label


class _SelfAttention(nn.Module):
    """Multi-head self-attention with the mask added to the scores, as BERT does."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = d_model // heads
        self.query = nn.Linear(d_model, d_model)
        self.key = nn.Linear(d_model, d_model)
        self.value = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim) + mask_bias
        context = torch.softmax(scores, dim=-1) @ v
        return self.out(context.transpose(1, 2).flatten(2))


class _EncoderLayer(nn.Module):
    """Post-LayerNorm encoder layer (attention, residual, LayerNorm, GELU MLP, residual, LayerNorm)."""

    def __init__(self, d_model: int, heads: int, ff: int) -> None:
        super().__init__()
        self.attention = _SelfAttention(d_model, heads)
        self.norm1 = nn.LayerNorm(d_model)
        self.ff = nn.Sequential(nn.Linear(d_model, ff), nn.GELU(), nn.Linear(ff, d_model))
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        x = self.norm1(x + self.attention(x, mask_bias))
        return self.norm2(x + self.ff(x))


class TinyTransformer(nn.Module):
    """Encoder classifier over int64 token ids and an int64 attention mask, both ``[batch, sequence]``."""

    def __init__(self, d_model: int = 48, heads: int = 4, layers: int = 2, ff: int = 96, classes: int = 2) -> None:
        super().__init__()
        self.tokens = nn.Embedding(VOCAB, d_model, padding_idx=PAD_ID)
        self.positions = nn.Embedding(MAX_LEN, d_model)
        self.position_ids: torch.Tensor
        self.register_buffer("position_ids", torch.arange(MAX_LEN)[None], persistent=False)
        self.layers = nn.ModuleList(_EncoderLayer(d_model, heads, ff) for _ in range(layers))
        self.head = nn.Linear(d_model, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        seq = input_ids.shape[1]
        x = self.tokens(input_ids) + self.positions(self.position_ids[:, :seq])
        keep = attention_mask.to(x.dtype)
        mask_bias = (1.0 - keep)[:, None, None, :] * torch.finfo(x.dtype).min
        for layer in self.layers:
            x = layer(x, mask_bias)
        pooled = (x * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1.0)
        return self.head(pooled)


def build(seed: int = DEFAULT_SEED) -> TinyTransformer:
    """A freshly initialised model; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return TinyTransformer()


def make_dataset(n: int, seed: int) -> List[Sample]:
    """``n`` natural-length samples (lengths 8..32), balanced labels, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    samples: List[Sample] = []
    for index in range(n):
        length = int(rng.integers(MIN_LEN, MAX_LEN + 1))
        ids = rng.integers(TOKEN_B + 1, VOCAB, size=length).astype(np.int64)
        first, second = sorted(rng.choice(length, size=2, replace=False).tolist())
        label = index % 2
        ids[first], ids[second] = (TOKEN_A, TOKEN_B) if label else (TOKEN_B, TOKEN_A)
        samples.append((ids, np.ones(length, np.int64), label))
    order = rng.permutation(n)
    return [samples[i] for i in order]


def pad_batch(samples: Sequence[Sample]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pad samples to the batch's longest (id 0, mask 0): ``(input_ids, attention_mask, labels)``."""
    width = max(len(ids) for ids, _, _ in samples)
    ids = np.zeros((len(samples), width), np.int64)
    mask = np.zeros((len(samples), width), np.int64)
    for row, (sample_ids, sample_mask, _) in enumerate(samples):
        ids[row, : len(sample_ids)] = sample_ids
        mask[row, : len(sample_mask)] = sample_mask
    return ids, mask, np.array([label for _, _, label in samples], np.int64)


def train(model: nn.Module, data: Sequence[Sample], epochs: int = TRAIN_EPOCHS, seed: int = DEFAULT_SEED,
          batch_size: int = 64, lr: float = 3e-3) -> nn.Module:
    """Train in place on padded batches with AdamW + cosine decay; returns the model in eval mode."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * math.ceil(len(data) / batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator).tolist()
        for start in range(0, len(data), batch_size):
            ids, mask, labels = pad_batch([data[i] for i in order[start : start + batch_size]])
            optimizer.zero_grad()
            logits = model(torch.from_numpy(ids), torch.from_numpy(mask))
            loss_fn(logits, torch.from_numpy(labels)).backward()
            optimizer.step()
            scheduler.step()
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, data: Sequence[Sample], batch_size: int = 256) -> np.ndarray:
    """Logits for every sample, run in padded batches."""
    model.eval()
    out = []
    for start in range(0, len(data), batch_size):
        ids, mask, _ = pad_batch(data[start : start + batch_size])
        out.append(model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy())
    return np.concatenate(out)


def accuracy(model: nn.Module, data: Sequence[Sample]) -> float:
    """Top-1 accuracy in percent."""
    labels = np.array([label for _, _, label in data])
    return float((predict(model, data).argmax(axis=1) == labels).mean() * 100.0)


def _cache_path(seed: int) -> Path:
    source = Path(__file__).read_bytes()
    key = hashlib.sha256(source + f"{torch.__version__}:{seed}".encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"edge-export-tiny-transformer-{key}.pt"


def trained(seed: int = DEFAULT_SEED, cache: bool = True) -> TinyTransformer:
    """The model trained on ``make_dataset(TRAIN_SAMPLES, seed)`` (~9 s on 2 cores); cached in the temp dir by seed."""
    model = build(seed)
    path = _cache_path(seed)
    if not cache:
        train(model, make_dataset(TRAIN_SAMPLES, seed), TRAIN_EPOCHS, seed)
        return model
    if path.is_file():
        model.load_state_dict(torch.load(str(path), map_location="cpu", weights_only=True))
        return model.eval()
    train(model, make_dataset(TRAIN_SAMPLES, seed), TRAIN_EPOCHS, seed)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(model.state_dict(), str(partial))
    partial.replace(path)  # atomic: concurrent test workers never read half a file
    return model


def tiny_transformer_factory() -> TinyTransformer:
    """The trained model, for ``edge-export --model tests.export_models.tiny_transformer:factory``."""
    return trained(DEFAULT_SEED)


factory = tiny_transformer_factory


def export_onnx(model: nn.Module, path: Path, opset: int = 17) -> Path:
    """Export with the classic exporter: int64 inputs, dynamic batch and sequence axes."""
    ids = torch.tensor([[TOKEN_A, 5, TOKEN_B, 7, 0, 0]], dtype=torch.int64).repeat(2, 1)
    mask = (ids != PAD_ID).to(torch.int64)
    axes = {0: "batch", 1: "sequence"}
    torch.onnx.export(
        model.eval(), (ids, mask), str(path), opset_version=opset, dynamo=False,
        input_names=list(INPUT_NAMES), output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAMES[0]: axes, INPUT_NAMES[1]: axes, OUTPUT_NAME: {0: "batch"}},
    )
    return path


def as_feeds(data: Sequence[Sample]) -> Dict[str, np.ndarray]:
    """A padded batch as an ONNX Runtime feed."""
    ids, mask, _ = pad_batch(data)
    return {INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask}


def write_npz_samples(directory: Path, data: Sequence[Sample]) -> List[Path]:
    """One ``.npz`` per sample (``input_ids``, ``attention_mask``; no batch axis) plus ``labels.json``."""
    samples = [{INPUT_NAMES[0]: ids, INPUT_NAMES[1]: mask} for ids, mask, _ in data]
    return _write_npz_dir(directory, samples, [label for _, _, label in data])

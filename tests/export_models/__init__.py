"""Models the export's accuracy-aware INT8 work is tested and benchmarked on (issue 14).

* :mod:`tests.export_models.tiny_transformer`: a 2-layer encoder classifier defined by hand, trained
  in seconds on a synthetic task with variable lengths (labels: top-1 accuracy).
* :mod:`tests.export_models.bert_encoder`: a BERT-style encoder from a ``transformers`` config with
  random weights (no labels: cosine to FP32).

Sample folders (:func:`write_npz_samples`), the format the export helpers read:

* one ``sample_NNNNN.npz`` per sample, one array per ONNX input name (``input_ids``,
  ``attention_mask``, and ``token_type_ids`` for BERT), **without** a batch axis, at the sample's
  natural length (no padding: lengths differ between files);
* for labelled data, ``labels.json`` beside them: ``{"sample_00000.npz": 1, ...}``, file name to
  integer class. JSON, not ``.npy``, so that a loader globbing ``*.npy``/``*.npz`` never mistakes
  the labels for an input.

Everything here imports torch: only tests under an ``export`` folder (collected on Python >= 3.10
with the export extra) may import it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

LABELS_FILE = "labels.json"


def write_npz_samples(
    directory: Path, samples: Sequence[Dict[str, np.ndarray]], labels: Optional[Sequence[int]] = None
) -> List[Path]:
    """Write one ``.npz`` per sample (arrays by input name, no batch axis) and ``labels.json`` if given."""
    directory.mkdir(parents=True, exist_ok=True)
    paths: List[Path] = []
    for index, sample in enumerate(samples):
        path = directory / f"sample_{index:05d}.npz"
        arrays: Dict[str, Any] = dict(sample)  # typed Any: numpy's stub would match allow_pickle to an array
        np.savez(path, **arrays)
        paths.append(path)
    if labels is not None:
        if len(labels) != len(samples):
            raise ValueError(f"{len(labels)} labels for {len(samples)} samples")
        mapping = {path.name: int(label) for path, label in zip(paths, labels)}
        (directory / LABELS_FILE).write_text(json.dumps(mapping, indent=0) + "\n")
    return paths


def read_labels(directory: Path) -> Dict[str, int]:
    """Read ``labels.json`` of a sample folder: file name to class."""
    return {str(k): int(v) for k, v in json.loads((directory / LABELS_FILE).read_text()).items()}

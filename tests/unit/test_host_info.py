"""The host fingerprint readers, on fake Jetson filesystem trees."""

from __future__ import annotations

from pathlib import Path

from edge_runtime.host_info import cuda_version, host_fingerprint, jetson_model, l4t_release


def _tree(root: Path, files: dict) -> Path:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_jetson_xavier_tree(tmp_path: Path) -> None:
    root = _tree(tmp_path, {
        "proc/device-tree/model": "NVIDIA Jetson AGX Xavier Developer Kit\x00",
        "etc/nv_tegra_release": "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
        "usr/local/cuda/version.json": '{"cuda": {"name": "CUDA SDK", "version": "11.4.315"}}',
    })
    assert jetson_model(root) == "NVIDIA Jetson AGX Xavier Developer Kit"
    assert l4t_release(root) == "35.4.1"
    assert cuda_version(root) == "11.4.315"


def test_old_cuda_version_txt_and_absent_facts(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"usr/local/cuda/version.txt": "CUDA Version 10.2.89\n"})
    assert cuda_version(root) == "10.2.89"
    facts = host_fingerprint(root)
    assert facts["jetson_model"] is None and facts["l4t"] is None
    assert facts["python"]

"""On the Jetson's own architecture: the runtime installed into an emulated arm64 Debian root answers.

The root (scripts/lib/arm64_root.sh: debootstrap --arch=arm64, qemu-user-static through binfmt_misc)
is built once per machine and reused. scripts/install.sh, run inside it, installs this checkout as on
an aarch64 device; the installed runtime, started as its unit starts it, serves a signed bundle for the
aarch64-cpu class, and the host queries it with tritonclient over 127.0.0.1. Emulation is 10-20x slower
than the host: this proves installation and behaviour, and times nothing. Marked ``arm64`` so it can be
left out when iterating (``-m "not arm64"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
from arm64_support import (
    Scratch,
    copy_checkout,
    expected,
    install_runtime,
    publish_bundle,
    root_for_this_test,
    run_in_root,
    service_ids,
    start_in_root,
    uninstall_runtime,
    write_trusted_key,
)

httpclient = pytest.importorskip("tritonclient.http")

pytestmark = pytest.mark.arm64

X = np.random.default_rng(19).random((5, 4), dtype=np.float32)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Scratch]:
    """A scratch folder inside the arm64 root (built or reused, held by this test alone), removed afterwards."""
    with root_for_this_test() as folder:
        yield folder


@pytest.fixture(scope="module")
def installed(scratch: Scratch) -> Iterator[Path]:
    """This checkout installed into the root by its install.sh, serving tiny/1: the installed `edge-runtime`.

    Uninstalled with --purge afterwards: the cached root is left as it was found.
    """
    source = copy_checkout(scratch)
    key = write_trusted_key(scratch)
    try:
        edge_runtime = install_runtime(scratch, source, key)
        publish_bundle(scratch)
        yield edge_runtime
    finally:
        uninstall_runtime(scratch, source)


def test_installed_runtime_runs_on_aarch64(scratch: Scratch, installed: Path) -> None:
    facts = json.loads(run_in_root(scratch.root, [str(installed), "info", "--json",
                                                  "--config", "/etc/edge-runtime/runtime.yaml"]))
    assert facts["machine"] == "aarch64", facts
    assert facts["onnxruntime"], facts  # the aarch64 wheel installed and imports under emulation


def test_installed_runtime_answers_the_host(scratch: Scratch, installed: Path, tmp_path: Path) -> None:
    server = start_in_root(scratch.root, installed, tmp_path / "server.log")
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", connection_timeout=60,
                                                  network_timeout=60)
        assert client.is_server_ready() and client.is_model_ready("tiny", "1")
        # `run` execs down to the runtime: its process here runs as the unit's service user
        assert Path(f"/proc/{server.process.pid}").stat().st_uid == service_ids(scratch.root)[0]
        metadata = client.get_model_metadata("tiny")
        assert metadata["platform"] == "onnxruntime_onnx" and metadata["versions"] == ["1"]
        for binary in (False, True):
            given = httpclient.InferInput("input", list(X.shape), "FP32")
            given.set_data_from_numpy(X, binary_data=binary)
            wanted = httpclient.InferRequestedOutput("output", binary_data=binary)
            answer = client.infer("tiny", [given], outputs=[wanted]).as_numpy("output")
            assert answer.shape == (5, 3) and answer.dtype == np.float32
            np.testing.assert_allclose(answer, expected(X), rtol=1e-5, atol=1e-6)
    finally:
        server.stop()
    assert server.process.returncode is not None

"""A sync pass on a simulated Xavier NX: a bundle without an engine is built on the device before its gate.

The runtime is the real ``edge-runtime serve`` with ``PYTHONPATH=tests/trt_fakes/site`` (the
simulated Jetson of test_tensorrt_simulated_device.py: TensorRT 8.5.2, compute 7.2; the fake
engine computes with ONNX Runtime) and the xavier-nx device config. Version 1 carries an engine
for this host (its plan made once by such a runtime), so the engine cache starts empty. Version 2
is published for the jetson-xavier-nx class as ONNX only, through a TUF repository made with
``fleet_server.tuf_repository`` and served on 127.0.0.1; the device's real sync pass
(``sync_pass.run_once``: refresh, download, install, the real health gate) runs in-process.

With ``tensorrt.build_on_device`` on, the gate's stage request makes the runtime build the engine
(into its cache) before any probe, and the version is promoted and serves its own numbers. With it
off, the stage fails: the outcome is ``gate_failed`` naming the missing engine, and version 1 keeps
serving, byte-identical.

Needs Python >= 3.10 (the server library, tuf 6): skipped on the device's Python 3.8.
"""

from __future__ import annotations

import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import numpy as np
import pytest

if sys.version_info < (3, 10):
    pytest.skip("the TUF repository is made with the server library (Python >= 3.10, tuf 6)",
                allow_module_level=True)
pytest.importorskip("tuf.ngclient", reason="a sync pass needs tuf (the `sync` extra)")
pytest.importorskip("onnx", reason="the bundles hold ONNX models written with onnx.helper")

from ota_negative_support import NX_TARGET, FileServer, tree_state
from runtime_support import RunningServer, W, affine_onnx, call_json, start_server

from edge_runtime.bundle import ArtifactSpec, TensorSpec, finalize_bundle
from edge_runtime.bundle.signing import generate_keypair, load_private_key
from edge_runtime.config import load_device_config
from edge_runtime.fleet import sync_pass
from edge_runtime.fleet.sync import GATE_FAILED, PROMOTED, SyncOutcome
from edge_runtime.fleet.sync_config import SyncSettings
from edge_runtime.serving.active_version import ActiveVersion, read_pointer, write_pointer
from fleet_server import tuf_repository as tuf_repo

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "tests" / "trt_fakes" / "site"
FAKES = {"PYTHONPATH": str(SITE)}  # the runtime's process only: the agent (this process) needs no TensorRT
DEVICE_ID = "xavier-nx-7"
CLASS = "jetson-xavier-nx"
B1 = np.array([0.5, -1.0, 2.0], dtype=np.float32)
B2 = np.array([3.0, 0.25, -4.0], dtype=np.float32)  # version 2's own numbers


def write_nx_bundle(directory: Path, key: Path, version: str, bias: np.ndarray, plan: Optional[bytes]) -> Path:
    """A signed tiny bundle for the xavier-nx target (FP16): the affine ONNX, and ``plan`` as its engine if given."""
    directory.mkdir(parents=True)
    (directory / "model.onnx").write_bytes(affine_onnx(bias))
    artifacts = [ArtifactSpec("model.onnx", "onnx", None, "fp32")]
    if plan is not None:
        (directory / "engines").mkdir()
        (directory / "engines" / "xavier-nx.plan").write_bytes(plan)
        artifacts.append(ArtifactSpec("engines/xavier-nx.plan", "engine", "xavier-nx", "fp16"))
    finalize_bundle(directory, name="tiny", version=version,
                    inputs=[TensorSpec(name="input", dtype="float32", shape=(-1, 4))],
                    outputs=[TensorSpec(name="output", dtype="float32", shape=(-1, 3))],
                    source_model_sha256="0" * 64, artifacts=artifacts, targets=[NX_TARGET],
                    private_key=load_private_key(key))
    return directory


def _device_config(path: Path, build_on_device: bool) -> Path:
    text = (ROOT / "device_configs" / "xavier-nx.yaml").read_text()
    assert "build_on_device: true" in text
    path.write_text(text.replace("build_on_device: true", f"build_on_device: {str(build_on_device).lower()}"))
    return path


def _runtime_config(path: Path, device: Path, public: Path, cache: Path) -> Path:
    path.write_text(f"device_config: {device}\ntrusted_keys: [{public}]\nwarmup_runs: 1\ndrain_timeout_s: 5\n"
                    f"engine_cache_dir: {cache}\n")
    return path


def _serve(models: Path, runtime: Path, log: Path) -> RunningServer:
    return start_server(["--repository", str(models), "--config", str(runtime)], log, env=FAKES, timeout=120)


@dataclass
class Keys:
    """The fleet's bundle signing key (private, public) and an engine plan this simulated host loads."""

    private: Path
    public: Path
    plan: bytes


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """The bundle key, and version 1's engine: built once by a simulated-Xavier runtime, taken from its cache."""
    base = tmp_path_factory.mktemp("nx-plan")
    private, public = generate_keypair(base / "bundle-key")
    write_nx_bundle(base / "models" / "tiny" / "1", private, "1", B1, None)
    runtime = _runtime_config(base / "runtime.yaml", _device_config(base / "xavier-nx.yaml", True), public,
                              base / "engines")
    assert _serve(base / "models", runtime, base / "serve.log").stop() == 0
    plans = list((base / "engines").glob("*.plan"))
    assert len(plans) == 1, (base / "serve.log").read_text()
    return Keys(private, public, plans[0].read_bytes())


@dataclass
class Device:
    """The simulated Xavier NX: its runtime (tiny 1 active, with its engine), engine cache and sync settings."""

    models: Path
    cache: Path
    runtime: RunningServer
    settings: SyncSettings
    tuf: Path  # the served TUF repository
    tuf_keys: Path
    work: Path

    def publish_v2_without_engine(self, key: Path) -> None:
        """tiny 2 (ONNX only) as an image target for the xavier-nx class, and the director's target for us."""
        bundle = write_nx_bundle(self.work / "bundle-2", key, "2", B2, None)
        assert not (bundle / "engines").exists()
        (self.work / "tar").mkdir()
        tar_path = self.work / "tar" / "tiny-2.tar"
        with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
            for path in sorted(bundle.rglob("*")):
                tar.add(path, arcname=path.relative_to(bundle).as_posix(), recursive=False)
        custom = {"model": "tiny", "version": "2", "device_class": CLASS, "device_classes": [CLASS]}
        tuf_repo.publish_bundle(self.tuf, self.tuf_keys, tar_path, custom)
        director = {"image": tar_path.name, "model": "tiny", "version": "2", "device_class": CLASS,
                    "fingerprint": None, "rollout_id": None}
        tuf_repo.set_device_targets(self.tuf, self.tuf_keys, {DEVICE_ID: [tuf_repo.DeviceTarget(tar_path.name,
                                                                                                 director)]})

    def sync(self) -> List[SyncOutcome]:
        """One real pass in-process: TUF refresh, download, install, the real health gate against the runtime."""
        return sync_pass.run_once(self.settings, gate_factory=sync_pass.health_gate)

    def plans(self) -> List[Path]:
        return sorted(self.cache.glob("*.plan")) if self.cache.is_dir() else []

    def infer(self, x: np.ndarray) -> Tuple[str, np.ndarray]:
        """The active version's answer over HTTP: its version and its output."""
        status, body = call_json(self.runtime, "POST", "/v2/models/tiny/infer", {
            "inputs": [{"name": "input", "datatype": "FP32", "shape": list(x.shape), "data": x.ravel().tolist()}]})
        assert status == 200, body
        return body["model_version"], np.array(body["outputs"][0]["data"], np.float32).reshape(len(x), 3)


def _device(base: Path, keys: Keys, build_on_device: bool) -> Iterator[Device]:
    models = base / "models"
    write_nx_bundle(models / "tiny" / "1", keys.private, "1", B1, keys.plan)
    write_pointer(models / "tiny", ActiveVersion("1"))
    device_config = _device_config(base / "xavier-nx.yaml", build_on_device)
    tuf, tuf_keys = base / "served" / "repo", base / "tuf-keys"
    tuf_repo.init_repository(tuf, tuf_keys, base / "tuf-root-keys")
    (base / "device").mkdir()
    (base / "device" / "root.json").write_bytes((tuf / "metadata" / "1.root.json").read_bytes())
    files = FileServer(base / "served")
    try:
        runtime = _serve(models, _runtime_config(base / "runtime.yaml", device_config, keys.public,
                                                 base / "engines"), base / "serve.log")
    except BaseException:
        files.close()
        raise
    settings = SyncSettings(
        metadata_url=f"{files.url}/repo/metadata/", targets_url=f"{files.url}/repo/targets/",
        metadata_dir=str(base / "device" / "tuf"), trusted_root=str(base / "device" / "root.json"),
        staging_dir=str(base / "device" / "staging"), repository=str(models), trusted_keys=(str(keys.public),),
        device_config=str(device_config), runtime_url=f"http://{runtime.url}", reserve_bytes=0,
        request_timeout_s=10.0, device_id=DEVICE_ID)
    sync_pass.seed_metadata(settings)
    (base / "work").mkdir()
    try:
        yield Device(models, base / "engines", runtime, settings, tuf, tuf_keys, base / "work")
    finally:
        runtime.stop()
        files.close()


@pytest.fixture()
def builds(tmp_path: Path, keys: Keys) -> Iterator[Device]:
    """A simulated Xavier NX whose device config has tensorrt.build_on_device on (as shipped)."""
    yield from _device(tmp_path, keys, build_on_device=True)


@pytest.fixture()
def never_builds(tmp_path: Path, keys: Keys) -> Iterator[Device]:
    """A simulated Xavier NX whose device config has tensorrt.build_on_device off."""
    yield from _device(tmp_path, keys, build_on_device=False)


def _lines(outcomes: List[SyncOutcome]) -> List[str]:
    return [outcome.line() for outcome in outcomes]


def test_a_bundle_without_an_engine_is_built_on_the_device_at_stage_then_gated_and_promoted(
        builds: Device, keys: Keys) -> None:
    x = np.array([[1.0, -2.0, 0.5, 4.0], [0.0, 1.0, 2.0, 3.0]], dtype=np.float32)
    version, got = builds.infer(x)
    assert version == "1"
    np.testing.assert_allclose(got, x @ W + B1, rtol=1e-5, atol=1e-5)
    assert builds.plans() == []  # version 1 runs the engine its bundle carries: nothing built yet
    builds.publish_v2_without_engine(keys.private)
    log_before = builds.runtime.log.read_text()

    outcomes = builds.sync()

    assert [(o.target, o.status) for o in outcomes] == [("tiny-2.tar", PROMOTED)], _lines(outcomes)
    assert read_pointer(builds.models / "tiny") == ActiveVersion("2", "1")
    assert not (builds.models / "tiny" / "2" / "engines").exists()  # the installed bundle is as published
    # the runtime built version 2's engine on this device, into its cache, during the pass ...
    plans = builds.plans()
    assert len(plans) == 1 and plans[0].read_bytes() != keys.plan
    assert "tiny v2 xavier-nx fp16" in plans[0].with_suffix(".json").read_text()
    log = builds.runtime.log.read_text()
    assert "building tiny v2" not in log_before
    new = log[len(log_before):]
    print(new)  # the runtime's side of the pass, in the test's output
    # ... at the stage request, before the probes and the promotion (the runtime logs each in order)
    built = new.index("built tiny v2 xavier-nx fp16")
    assert new.index("building tiny v2 xavier-nx fp16") < built < new.index("model tiny: version 2 is active"), new
    assert new.count("building tiny v2 xavier-nx fp16 (") == 1, new  # one build, the gate's probes reuse it

    # the gate's probes ran on version 2 (its only engine is the one built), every one answered
    status, stats = call_json(builds.runtime, "GET", "/v2/models/tiny/versions/2/stats")
    probes = load_device_config(Path(builds.settings.device_config)).health_gate.probe_requests
    assert status == 200 and stats["model_stats"][0]["inference_stats"]["success"]["count"] == probes, stats
    assert stats["model_stats"][0]["inference_stats"]["fail"]["count"] == 0, stats

    # and it serves version 2, from the engine it built, with version 2's numbers
    version, got = builds.infer(x)
    assert version == "2"
    np.testing.assert_allclose(got, x @ W + B2, rtol=1e-5, atol=1e-5)
    status, metadata = call_json(builds.runtime, "GET", "/v2/models/tiny")
    assert status == 200 and metadata["versions"] == ["2"] and metadata["backend"] == "tensorrt", metadata
    status, config = call_json(builds.runtime, "GET", "/v2/models/tiny/config")
    assert config["parameters"]["artifact"]["string_value"].startswith("engine cache: tiny v2 xavier-nx fp16")


def test_without_build_on_device_the_stage_fails_naming_the_missing_engine_and_v1_keeps_serving(
        never_builds: Device, keys: Keys) -> None:
    never_builds.publish_v2_without_engine(keys.private)
    version_1 = tree_state(never_builds.models / "tiny" / "1")

    outcomes = never_builds.sync()

    lines = _lines(outcomes)
    print("\n".join(lines))  # what the device reports, in the test's output
    assert len(outcomes) == 1 and outcomes[0].status == GATE_FAILED, lines
    reason = outcomes[0].reason
    assert "not staged" in reason and "no TensorRT engine for xavier-nx" in reason, lines
    assert "tensorrt.build_on_device is off" in reason and "\n" not in reason, lines
    assert read_pointer(never_builds.models / "tiny") == ActiveVersion("1")
    assert tree_state(never_builds.models / "tiny" / "1") == version_1
    assert never_builds.plans() == []  # nothing was built
    assert "building tiny v2" not in never_builds.runtime.log.read_text()
    x = np.array([[1.0, -2.0, 0.5, 4.0]], dtype=np.float32)
    version, got = never_builds.infer(x)
    assert version == "1"
    np.testing.assert_allclose(got, x @ W + B1, rtol=1e-5, atol=1e-5)
    status, metadata = call_json(never_builds.runtime, "GET", "/v2/models/tiny")
    assert status == 200 and metadata["versions"] == ["1"], metadata

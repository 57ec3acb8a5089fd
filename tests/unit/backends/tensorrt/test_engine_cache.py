"""The device-local engine cache: keyed by bundle and fingerprint, atomic, re-verified before use."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from edge_runtime.backends.tensorrt.engine_cache import CacheKey, EngineCache
from edge_runtime.bundle.fingerprint import BuildFingerprint, EngineFingerprint, HostFingerprint

HOST = HostFingerprint(tensorrt_version="8.5.2.2", compute_capability="7.2", l4t="35.4.1")
KEY = CacheKey("a" * 64, "model.onnx", EngineFingerprint(HOST, BuildFingerprint("fp16", 1)))


def test_put_then_get_returns_the_plan_with_its_record(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "cache")
    path = cache.put(KEY, b"plan bytes", {"label": "m"})
    found = cache.get(KEY)
    assert found is not None and found.plan == b"plan bytes" and found.path == path
    assert found.record["size"] == 10 and found.record["label"] == "m"
    assert (path.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("other", [
    dataclasses.replace(KEY, manifest_sha256="b" * 64),  # another bundle
    dataclasses.replace(KEY, static_batch=8),  # another DLA batch size
    dataclasses.replace(KEY, fingerprint=EngineFingerprint(HOST, BuildFingerprint("int8", 1))),
    dataclasses.replace(KEY, fingerprint=EngineFingerprint(dataclasses.replace(HOST, tensorrt_version="8.5.3.1"),
                                                           BuildFingerprint("fp16", 1))),  # a JetPack upgrade
    dataclasses.replace(KEY, fingerprint=EngineFingerprint(HOST, BuildFingerprint("fp16", 1, dla_core=0))),
])
def test_every_part_of_the_key_tells_engines_apart(tmp_path: Path, other: CacheKey) -> None:
    cache = EngineCache(tmp_path)
    cache.put(KEY, b"plan", {})
    assert cache.get(other) is None


def test_a_plan_without_its_record_is_an_interrupted_build_and_never_used(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.put(KEY, b"plan", {})
    os.unlink(tmp_path / f"{KEY.digest}.json")  # the crash came between the two writes
    assert cache.get(KEY) is None


@pytest.mark.parametrize("damage", ["same-size", "truncated", "symlink", "fifo"])
def test_a_plan_that_does_not_match_its_record_is_dropped(tmp_path: Path, damage: str) -> None:
    cache = EngineCache(tmp_path)
    plan = cache.put(KEY, b"good plan", {})
    plan.unlink()
    if damage == "same-size":
        plan.write_bytes(b"evil plan")
    elif damage == "truncated":
        plan.write_bytes(b"good")
    elif damage == "symlink":
        (tmp_path / "elsewhere").write_bytes(b"good plan")
        plan.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(plan)  # must not block
    assert cache.get(KEY) is None
    assert not (tmp_path / f"{KEY.digest}.json").exists()  # dropped: the loader rebuilds it


def test_an_invalid_record_is_ignored(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.put(KEY, b"plan", {})
    (tmp_path / f"{KEY.digest}.json").write_text("{not json")
    assert cache.get(KEY) is None


def test_timing_cache_is_per_host(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    cache.put_timing_cache(HOST, b"timing")
    assert cache.timing_cache(HOST) == b"timing"
    assert cache.timing_cache(dataclasses.replace(HOST, compute_capability="8.7")) is None


def test_stale_temp_files_of_a_killed_write_are_cleaned(tmp_path: Path) -> None:
    stale = tmp_path / f".{KEY.digest}.plan.x1.tmp"
    stale.write_bytes(b"half a plan")
    os.utime(stale, (0, 0))
    EngineCache(tmp_path).clean_interrupted()
    assert not stale.exists()

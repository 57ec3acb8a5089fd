"""The director's bins through the device's TUF client, against a real repository served on 127.0.0.1.

Each device sees only its own targets, loads only its own bin, and accepts a director target only
when the image role lists the same bytes. The repository is built by ``tuf_repo_tool.py`` (tuf 6),
so these tests also run on Python 3.8 with tuf 5.1 (see test_tuf_client.py).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import shutil
from pathlib import Path
from typing import Iterator, List, Tuple

import pytest

pytest.importorskip("tuf.ngclient")

from served_in_thread import served_in_thread
from test_tuf_client import CUSTOM, Repo

from edge_runtime.fleet.errors import MetadataRefusedError
from edge_runtime.fleet.tuf_client import BIN_HEX, TufClient, TufTarget, device_prefix


def _bin(device_id: str) -> str:
    return hashlib.sha256(device_id.encode()).hexdigest()[:BIN_HEX]


def _devices_in_two_bins() -> Tuple[str, str, str]:
    """Two devices sharing a bin, and a third in another bin."""
    first = "dev-0"
    neighbour = next(f"dev-{i}" for i in range(1, 5000) if _bin(f"dev-{i}") == _bin(first))
    other = next(f"dev-{i}" for i in range(1, 5000) if _bin(f"dev-{i}") != _bin(first))
    return first, neighbour, other


FIRST, NEIGHBOUR, OTHER = _devices_in_two_bins()


class _CountingHandler(http.server.SimpleHTTPRequestHandler):
    requests: List[str]

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, format: str, *args: object) -> None:
        """Keep the test output clean."""


@pytest.fixture()
def repo(tmp_path: Path) -> Repo:
    return Repo(tmp_path)


@pytest.fixture()
def served(repo: Repo) -> Iterator[Tuple[str, List[str]]]:
    """An HTTP server on 127.0.0.1 serving the repository; yields its URL and the paths requested."""
    requests: List[str] = []
    handler_class = type("Handler", (_CountingHandler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler_class, directory=str(repo.dir)))
    with served_in_thread(httpd) as port:
        yield f"http://127.0.0.1:{port}", requests


def _tar(tmp_path: Path, name: str) -> Path:
    tar = tmp_path / name
    tar.write_bytes(name.encode() * 500)
    return tar


def _targets_of(repo: Repo, url: str, device_id: str, device_dir: Path = Path()) -> List[TufTarget]:
    """A fresh client (on its own trusted metadata, seeded with root.json) asks for ``device_id``'s targets."""
    metadata = device_dir if device_dir != Path() else repo.device
    if not (metadata / "root.json").exists():
        metadata.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(repo.device / "root.json", metadata / "root.json")
    client = TufClient(metadata, f"{url}/metadata/", f"{url}/targets/")
    try:
        return client.device_targets(device_id)
    finally:
        client.close()


def _publish(repo: Repo, tmp_path: Path, version: str, *devices: str) -> Path:
    tar = _tar(tmp_path, f"tiny-{version}.tar")
    repo.tool("publish", str(tar), json.dumps({**CUSTOM, "version": version}), *devices)
    return tar


def test_each_device_sees_only_its_own_targets(repo: Repo, served: Tuple[str, List[str]], tmp_path: Path) -> None:
    url, _ = served
    _publish(repo, tmp_path, "2", FIRST, OTHER)
    tar3 = _publish(repo, tmp_path, "3", NEIGHBOUR)
    repo.tool("assign", FIRST, "tiny-3.tar", json.dumps({**CUSTOM, "version": "3", "rollout_id": 12}))
    seen = {device: [(t.name, t.custom.get("rollout_id")) for t in _targets_of(repo, url, device, tmp_path / device)]
            for device in (FIRST, NEIGHBOUR, OTHER)}
    assert seen == {FIRST: [("tiny-2.tar", None), ("tiny-3.tar", 12)], NEIGHBOUR: [("tiny-3.tar", None)],
                    OTHER: [("tiny-2.tar", None)]}
    [target] = _targets_of(repo, url, NEIGHBOUR, tmp_path / NEIGHBOUR)
    digest = hashlib.sha256(tar3.read_bytes()).hexdigest()
    assert (target.sha256, target.length) == (digest, tar3.stat().st_size)
    assert target.url == f"{url}/targets/{digest}.tiny-3.tar"  # the image's file: stored once for every device


def test_a_device_loads_only_its_own_bin(repo: Repo, served: Tuple[str, List[str]], tmp_path: Path) -> None:
    url, requests = served
    _publish(repo, tmp_path, "2", FIRST, OTHER)
    assert [t.name for t in _targets_of(repo, url, OTHER)] == ["tiny-2.tar"]
    bins = [path for path in requests if "devices-" in path]
    assert bins and all(f"devices-{_bin(OTHER)}.json" in path for path in bins)
    assert not any(f"devices-{_bin(FIRST)}" in path for path in requests)
    assert (repo.device / f"devices-{_bin(OTHER)}.json").exists()  # the verified bin is kept as trusted


def test_a_device_without_targets_gets_none(repo: Repo, served: Tuple[str, List[str]], tmp_path: Path) -> None:
    url, requests = served
    assert _targets_of(repo, url, FIRST) == []  # no bin at all yet
    _publish(repo, tmp_path, "2", FIRST)
    assert _targets_of(repo, url, NEIGHBOUR, tmp_path / "neighbour") == []  # its bin exists, it is not listed
    repo.tool("clear", FIRST)
    assert _targets_of(repo, url, FIRST) == []  # taken off again
    assert not any("tiny-2.tar" in path for path in requests)  # nothing but metadata fetched


def _trusted_bin(repo: Repo, device_id: str) -> bytes:
    return (repo.device / f"devices-{_bin(device_id)}.json").read_bytes()


@pytest.mark.parametrize("mode, sha256, words", [
    ("trusted", "0" * 64, "director and image roles disagree"),
    ("rogue", "-", "signature"),
])
def test_a_forged_director_target_is_refused(repo: Repo, served: Tuple[str, List[str]], tmp_path: Path,
                                             mode: str, sha256: str, words: str) -> None:
    url, _ = served
    _publish(repo, tmp_path, "2", FIRST)
    assert len(_targets_of(repo, url, FIRST)) == 1
    before = _trusted_bin(repo, FIRST)
    repo.tool("forge-director", FIRST, "tiny-2.tar", sha256, mode)
    with pytest.raises(MetadataRefusedError) as caught:
        _targets_of(repo, url, FIRST)
    message = str(caught.value)
    assert words in message and "\n" not in message, message
    assert _trusted_bin(repo, FIRST) == before  # the refused bin is not kept
    assert not (repo.device / ".staging").exists()


def test_the_director_prefix_matches_the_server() -> None:
    pytest.importorskip("fleet_server.tuf_director")
    from fleet_server.tuf_director import device_target_path

    assert device_prefix(FIRST) + "tiny-2.tar" == device_target_path(FIRST, "tiny-2.tar")

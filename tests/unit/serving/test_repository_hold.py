"""A request holds the model it got: an unload waits for it, so the request is still answered."""

from __future__ import annotations

import threading
from typing import Callable

import numpy as np
from serving_support import BundleShelf

from edge_runtime.backends.fake import FakeBackend
from edge_runtime.serving.model import READY, UNAVAILABLE
from edge_runtime.serving.repository import ModelRepository

OpenRepository = Callable[..., ModelRepository]


def test_a_held_model_answers_its_request_while_an_unload_waits_for_it(
        shelf: BundleShelf, open_repository: OpenRepository) -> None:
    shelf.root.mkdir()
    repository = open_repository(drain_timeout_s=120.0)  # the unload waits for the release, however slow
    repository.add_fake("echo", FakeBackend)
    repository.load("echo")
    held = repository.hold("echo")
    unloading = threading.Thread(target=repository.unload, args=("echo",))
    unloading.start()
    while repository.loaded():  # out of the table: the unload now stops it, and waits for the holder
        pass
    assert held.state == READY
    assert held.infer({"INPUT0": np.ones((1, 16), np.float32)})["OUTPUT0"].tolist() == [[3.0] * 16]
    held.release()
    unloading.join()
    assert held.state == UNAVAILABLE

"""The model repository: ``<root>/<model>/<version>/`` bundle directories, loaded on request.

Each model serves its highest version. Loading verifies the bundle with the trusted keys (before
anything in it is parsed), starts the model's workers and warms them up; only then does the new
version replace the old one, which is drained and closed. A load that fails leaves the version
that was serving in place and records why (the repository index shows it).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.backends.base import Backend
from edge_runtime.backends.registry import create_backend
from edge_runtime.bundle.verify import open_bundle
from edge_runtime.config import DeviceConfig, RuntimeSettings
from edge_runtime.errors import EdgeRuntimeError, ModelNotFoundError, ModelNotReadyError
from edge_runtime.serving.model import READY, UNAVAILABLE, ServedModel

log = logging.getLogger(__name__)


class ModelRepository:
    """Loaded models by name, plus what the repository directory offers."""

    def __init__(self, root: Optional[Path], settings: RuntimeSettings, device: DeviceConfig,
                 trusted_keys: Sequence[Ed25519PublicKey]) -> None:
        self.root, self.settings, self.device = root, settings, device
        self._keys = list(trusted_keys)
        self._models: Dict[str, ServedModel] = {}
        self._failures: Dict[str, str] = {}
        self._fakes: Dict[str, Callable[[], Backend]] = {}
        self._lock = threading.Lock()  # guards the dicts
        self._load_lock = threading.Lock()  # one load/unload at a time: loads are slow and memory-hungry

    def available(self) -> Dict[str, List[str]]:
        """Model name → version directories on disk (numeric names), highest last."""
        found: Dict[str, List[str]] = {name: ["1"] for name in self._fakes}
        if self.root is not None and self.root.is_dir():
            for model_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")):
                versions = sorted((v.name for v in model_dir.iterdir() if v.is_dir() and v.name.isdigit()), key=int)
                if versions:
                    found[model_dir.name] = versions
        return found

    def add_fake(self, name: str, factory: Callable[[], Backend]) -> None:
        """Offer a model served by a backend built by ``factory`` with no bundle (tests, demos)."""
        self._fakes[name] = factory

    def load(self, name: str) -> ServedModel:
        """(Re)load ``name`` at its highest version; on failure the serving version stays."""
        with self._load_lock:
            versions = self.available().get(name)
            if not versions:
                raise ModelNotFoundError(f"no model '{name}' in the repository")
            version = versions[-1]
            try:
                model = self._start(name, version)
            except EdgeRuntimeError as exc:
                with self._lock:
                    self._failures[name] = f"version {version}: {exc}"
                log.warning("model %s version %s failed to load: %s", name, version, exc)
                raise
            with self._lock:
                old = self._models.get(name)
                self._models[name] = model
                self._failures.pop(name, None)
            if old is not None:
                old.stop(self.settings.drain_timeout_s)
            log.info("model %s version %s ready (%s, %s)", name, version, model.platform, model.artifact)
            return model

    def _start(self, name: str, version: str) -> ServedModel:
        if name in self._fakes:
            model = ServedModel(name, version, self._fakes[name], None, self.device, self.settings)
        else:
            assert self.root is not None
            bundle = open_bundle(self.root / name / version, self._keys)
            backend = self.device.backend
            model = ServedModel(name, version, lambda: create_backend(backend), bundle, self.device, self.settings)
        model.start()
        return model

    def unload(self, name: str) -> None:
        """Stop serving ``name`` (drains its queue first)."""
        with self._load_lock:
            with self._lock:
                model = self._models.pop(name, None)
            if model is None:
                raise ModelNotFoundError(f"model '{name}' is not loaded")
            model.stop(self.settings.drain_timeout_s)

    def load_all(self) -> None:
        """Load every model found; a model that fails is logged and left out, the others serve."""
        for name in self.available():
            try:
                self.load(name)
            except EdgeRuntimeError:
                continue  # recorded in the index with its reason

    def get(self, name: str, version: Optional[str] = None) -> ServedModel:
        """The ready model, or 404 (unknown model/version) / 503 (known, not serving)."""
        with self._lock:
            model = self._models.get(name)
            failure = self._failures.get(name)
        if model is None:
            if name in self.available():
                reason = f": {failure}" if failure else ""
                raise ModelNotReadyError(f"model '{name}' is not loaded{reason}")
            raise ModelNotFoundError(f"unknown model '{name}'")
        if version not in (None, "", model.version):
            raise ModelNotFoundError(f"model '{name}' has no version '{version}' (serving {model.version})")
        if model.state != READY:
            raise ModelNotReadyError(f"model '{name}' is {model.state.lower()}")
        return model

    def loaded(self) -> List[ServedModel]:
        """Every loaded model (for statistics and metrics)."""
        with self._lock:
            return list(self._models.values())

    def index(self) -> List[Dict[str, str]]:
        """Triton's repository index: name, version, state, reason."""
        with self._lock:
            models, failures = dict(self._models), dict(self._failures)
        entries = []
        for name, versions in sorted(self.available().items()):
            model = models.get(name)
            if model is not None:
                entries.append({"name": name, "version": model.version, "state": model.state, "reason": ""})
            else:
                entries.append({"name": name, "version": versions[-1], "state": UNAVAILABLE,
                                "reason": failures.get(name, "not loaded")})
        return entries

    def close(self) -> None:
        """Drain and stop every model (graceful shutdown)."""
        with self._lock:
            models = list(self._models.values())
            self._models.clear()
        for model in models:
            model.stop(self.settings.drain_timeout_s)

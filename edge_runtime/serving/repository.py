"""The model repository: ``<root>/<model>/<version>/`` bundles, which of them serve, and why.

Which version serves (DESIGN rule 5):

- With an active-version pointer (:mod:`.active_version`), its ``active`` version serves; if it
  fails to verify or load (at start or on reload), its ``last_good`` one serves instead, and the
  index says why. A newer version on disk is not served until someone points at it.
- With no pointer (a fresh repository), the highest version that verifies and loads serves,
  falling back to lower ones; nothing is written.
- Only an explicit act writes the pointer: :meth:`ModelRepository.activate` (an operator's load
  request, ``edge-runtime activate``), or :meth:`ModelRepository.promote` after
  :meth:`ModelRepository.stage` (the fleet agent's health gate: load the new version beside the
  active one, probe it at ``/v2/models/<m>/versions/<v>``, then flip, or :meth:`unload` it).

Several versions of a model can be loaded at once: ``/v2/models/<m>/versions/<v>/infer`` reaches
each, ``/v2/models/<m>/infer`` the active one. Loading verifies the bundle with the trusted keys
before anything in it is parsed, checks the memory budget, starts and warms the workers; only
then does it replace what served. A failure leaves what served in place and is recorded for the
index. No response carries a filesystem path: errors are logged with it, answered without it.

Requests are answered from memory (:mod:`.model_table`): the repository scans the disk only at
start (:meth:`ModelRepository.load_all`), at each explicit act, and for the index. A model put on
disk after that and never loaded is "not found" for inference until someone loads it, as in
Triton's explicit model control mode.

Readiness (:meth:`ModelRepository.ready`, ``/v2/health/ready``) is strict, as Triton's default:
every model that should be loaded has a ready active version. Readiness is not liveness: a model
that failed makes the server not ready, never not live, so a supervisor must restart on liveness
(the process), not on readiness, or one bad bundle would restart the service in a loop.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.backends.base import Backend
from edge_runtime.backends.choice import choose_backend
from edge_runtime.backends.registry import create_backend
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle
from edge_runtime.config import DeviceConfig, RuntimeSettings
from edge_runtime.errors import (
    EdgeRuntimeError,
    ModelNotFoundError,
    ModelNotReadyError,
    OutputError,
    PointerError,
    RequestError,
)
from edge_runtime.serving import memory_budget, repository_layout
from edge_runtime.serving.active_version import is_version_name, record_active, startup_versions
from edge_runtime.serving.model import ServedModel
from edge_runtime.serving.model_table import ModelTable
from edge_runtime.serving.repository_layout import Layout

log = logging.getLogger(__name__)


class ModelRepository:
    """Loads, activates and unloads the versions a repository directory offers; serves them from a ModelTable."""

    def __init__(self, root: Optional[Path], settings: RuntimeSettings, device: DeviceConfig,
                 trusted_keys: Sequence[Ed25519PublicKey]) -> None:
        self.root, self.settings, self.device = root, settings, device
        self._keys = list(trusted_keys)
        self._table = ModelTable()
        self._fakes: Dict[str, Callable[[], Backend]] = {}
        self._load_lock = threading.Lock()  # one load/unload at a time: loads are slow and memory-hungry

    # --- what is on disk -------------------------------------------------------------------

    def layout(self) -> Layout:
        """The models and versions on disk now (plus fake models), and models that cannot be listed."""
        found = repository_layout.scan(self.root)
        for name in self._fakes:
            found.versions[name] = ["1"]
        return found

    def _look(self) -> Layout:
        """Scan the disk and make it what requests are answered against (start and explicit acts only)."""
        found = self.layout()
        self._table.remember(found)
        return found

    def available(self) -> Dict[str, List[str]]:
        """Model name → version directories on disk (ASCII digits), lowest first."""
        return self.layout().versions

    def add_fake(self, name: str, factory: Callable[[], Backend]) -> None:
        """Offer a model served by a backend built by ``factory`` with no bundle (tests, demos)."""
        self._fakes[name] = factory
        self._table.add_fake(name)

    # --- explicit acts: these write the pointer ------------------------------------------------

    def load(self, name: str, version: Optional[str] = None,
             settings: Optional[RuntimeSettings] = None) -> ServedModel:
        """An operator's load: :meth:`activate` ``version`` (default: the highest on disk)."""
        return self.activate(name, version, settings)

    def activate(self, name: str, version: Optional[str] = None,
                 settings: Optional[RuntimeSettings] = None) -> ServedModel:
        """Load ``version`` and make it the active one (pointer written); on failure what served stays."""
        with self._load_lock:
            version = self._pick(name, version)
            self._table.want(name)
            previous = self._table.active_version(name)
            model = self._start(name, version, settings, replacing=previous)
            try:
                self._write_pointer(name, version, previous)
            except PointerError:
                model.stop(self.settings.drain_timeout_s)
                raise
            self._install(name, version, model, make_active=True, note="")
            return model

    def stage(self, name: str, version: str, settings: Optional[RuntimeSettings] = None) -> ServedModel:
        """Load ``version`` beside the active one (reachable at ``/versions/<v>``); the pointer is untouched."""
        with self._load_lock:
            version = self._pick(name, version)
            existing = self._table.find(name, version)
            if existing is not None and existing.ready:
                return existing
            model = self._start(name, version, settings, replacing=None)
            self._install(name, version, model, make_active=False)
            return model

    def promote(self, name: str, version: str) -> None:
        """Make a loaded (staged) version the active one: write the pointer, unload the one it replaces."""
        with self._load_lock:
            self._look()
            model = self._table.find(name, version)
            previous = self._table.active_version(name)
            if model is None or not model.ready:
                raise ModelNotReadyError(f"cannot promote '{name}' version {version}: it is not loaded and ready")
            if previous == version:
                return
            self._write_pointer(name, version, previous)
            old = self._table.make_active(name, version)
            if old is not None:
                old.stop(self.settings.drain_timeout_s)
            log.info("model %s: version %s is active (was %s)", name, version, previous)

    def unload(self, name: str, version: Optional[str] = None) -> None:
        """Stop serving ``name`` (every version, or one), draining queues first; the pointer is untouched."""
        with self._load_lock:
            self._look()
            stopping = self._table.remove(name, version)
            if not stopping:
                which = f" at version {version}" if version else ""
                raise ModelNotFoundError(f"model '{name}' is not loaded{which}")
            for model in stopping:
                model.stop(self.settings.drain_timeout_s)

    # --- start: no writes -------------------------------------------------------------------

    def load_all(self) -> None:
        """Serve every model found as the pointer (or its absence) says; failures are logged and indexed."""
        layout = self._look()
        for name, ignored in layout.ignored.items():
            log.warning("model %s: ignoring %s (not version numbers)", name, ", ".join(map(repr, ignored)))
        for name, problem in layout.problems.items():
            log.error("model %s: %s (%s)", name, problem, self.root)
        for name in layout.names():
            self._table.want(name)
            if name in layout.problems:
                continue  # indexed with its reason
            with self._load_lock:
                self._restore(name, layout.versions[name])  # listed: names() less problems

    def _restore(self, name: str, on_disk: List[str]) -> None:
        """Serve the first of the versions the pointer (or its absence) names that loads."""
        model_dir = None if name in self._fakes or self.root is None else self.root / name
        candidates, note = startup_versions(model_dir, on_disk)
        if note:
            log.error("model %s: %s", name, note)
        for version in candidates:
            try:
                model = self._start(name, version, None, replacing=None)
            except EdgeRuntimeError:
                continue  # recorded with its reason
            if version != candidates[0]:
                first = self._table.failure(name, candidates[0])  # recorded by _start as it failed
                note = f"version {candidates[0]} failed ({first}); serving version {version} instead"
                log.warning("model %s: %s", name, note)
            self._install(name, version, model, make_active=True, note=note)
            return

    # --- one load -----------------------------------------------------------------------------

    def _pick(self, name: str, version: Optional[str]) -> str:
        layout = self._look()
        if name in layout.problems:
            raise ModelNotReadyError(f"failed to load '{name}': {layout.problems[name]}")
        versions = layout.versions.get(name)
        if not versions:
            raise ModelNotFoundError(f"failed to load '{name}': no model '{name}' in the repository")
        if version is None:
            return versions[-1]
        if not is_version_name(version):
            raise RequestError(f"failed to load '{name}': version {version!r} is not a version number")
        if version not in versions:
            raise ModelNotFoundError(f"failed to load '{name}': version {version} is not in the repository")
        return version

    def _start(self, name: str, version: str, settings: Optional[RuntimeSettings],
               replacing: Optional[str]) -> ServedModel:
        """Verify, check memory, start and warm up one version; a failure is recorded, answered without paths."""
        try:
            return self._start_unrecorded(name, version, settings or self.settings, replacing)
        except EdgeRuntimeError as exc:
            public = self._public_message(str(exc), name, version)
            log.warning("model %s version %s failed to load: %s", name, version, exc)
            self._table.record_failure(name, version, public)
            raise type(exc)(f"failed to load '{name}' version {version}: {public}") from exc

    def _start_unrecorded(self, name: str, version: str, settings: RuntimeSettings,
                          replacing: Optional[str]) -> ServedModel:
        bundle: Optional[VerifiedBundle] = None
        note = ""
        if name in self._fakes:
            factory = self._fakes[name]
        else:
            assert self.root is not None
            bundle = open_bundle(self.root / name / version, self._keys)
            choice = choose_backend(self.device)  # BackendUnavailableError: fails this load like any other
            if choice.reason:
                log.warning("model %s version %s: served by %s: %s", name, version, choice.name, choice.reason)
            note, backend = choice.reason, choice.name
            factory = lambda: create_backend(backend)  # noqa: E731
        model = ServedModel(name, version, factory, bundle, self.device, settings)
        model.backend_note = note
        memory_budget.start_within_budget(model, f"'{name}' version {version}",
                                          self._table.memory_used(name, {version, replacing}),
                                          self.device.memory_budget_mb, self.settings.drain_timeout_s)
        log.info("model %s version %s ready (%s, %s, %.0f MiB)", name, version, model.platform, model.artifact,
                 model.memory_mb)
        return model

    def _install(self, name: str, version: str, model: ServedModel, make_active: bool,
                 note: Optional[str] = None) -> None:
        """Put a started model in place; stop what it replaces (the same version, the old active one)."""
        for old in self._table.install(name, version, model, make_active, note):
            old.stop(self.settings.drain_timeout_s)

    def _write_pointer(self, name: str, version: str, previous: Optional[str]) -> None:
        if name in self._fakes or self.root is None:
            return
        try:
            pointer = record_active(self.root / name, version, previous)
        except OutputError as exc:
            log.error("model %s: cannot record version %s as active: %s", name, version, exc)
            raise PointerError(f"failed to load '{name}': cannot record version {version} as active "
                               "(the repository is not writable; see the server log)") from exc
        log.info("model %s: active version %s recorded (last good: %s)", name, version, pointer.last_good)

    def _public_message(self, message: str, name: str, version: str) -> str:
        """``message`` without filesystem paths (bundle errors start with the bundle directory)."""
        if self.root is None:
            return message
        bundle_dir = str(self.root / name / version)
        message = message.replace(bundle_dir + ": ", "").replace(bundle_dir, f"{name}/{version}")
        return message.replace(str(self.root), "<repository>")

    # --- serving: memory only (see :mod:`.model_table`) ------------------------------------------

    def get(self, name: str, version: Optional[str] = None) -> ServedModel:
        """The ready model (version), or 404 (unknown model/version) / 503 (known, not serving); no disk access."""
        return self._table.get(name, version)

    def hold(self, name: str, version: Optional[str] = None) -> ServedModel:
        """As :meth:`get`, held for a request until its ``release()``: a swap or unload waits for it."""
        return self._table.get(name, version, hold=True)

    def loaded(self) -> List[ServedModel]:
        """Every loaded model version (for statistics and metrics)."""
        return self._table.loaded()

    def loaded_versions(self, name: str) -> List[str]:
        """The versions of ``name`` that are loaded, lowest first."""
        return self._table.loaded_versions(name)

    def active_version(self, name: str) -> Optional[str]:
        """The version ``/v2/models/<name>`` serves, if any."""
        return self._table.active_version(name)

    def ready(self) -> bool:
        """Strict readiness: every model that should serve has a ready active version."""
        return self._table.ready()

    def index(self) -> List[Dict[str, str]]:
        """Triton's repository index: one entry per model version on disk or loaded (one scan of the disk)."""
        return self._table.index(self.layout())

    def close(self) -> None:
        """Drain and stop every model (graceful shutdown)."""
        for model in self._table.clear():
            model.stop(self.settings.drain_timeout_s)

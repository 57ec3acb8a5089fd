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

Readiness (:meth:`ModelRepository.ready`, ``/v2/health/ready``) is strict, as Triton's default:
every model that should be loaded has a ready active version. Readiness is not liveness: a model
that failed makes the server not ready, never not live, so a supervisor must restart on liveness
(the process), not on readiness, or one bad bundle would restart the service in a loop.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Set, Tuple

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge_runtime.backends.base import Backend
from edge_runtime.backends.registry import create_backend
from edge_runtime.bundle.verify import VerifiedBundle, open_bundle
from edge_runtime.config import DeviceConfig, RuntimeSettings
from edge_runtime.errors import EdgeRuntimeError, ModelNotFoundError, ModelNotReadyError, OutputError, RequestError
from edge_runtime.serving import memory_budget
from edge_runtime.serving.active_version import (
    ActiveVersion,
    PointerError,
    is_version_name,
    next_pointer,
    read_pointer,
    version_key,
    write_pointer,
)
from edge_runtime.serving.model import READY, UNAVAILABLE, ServedModel
from edge_runtime.serving.repository_layout import Layout, scan

log = logging.getLogger(__name__)


class ModelRepository:
    """Loaded models by name and version, the active version of each, and what the directory offers."""

    def __init__(self, root: Optional[Path], settings: RuntimeSettings, device: DeviceConfig,
                 trusted_keys: Sequence[Ed25519PublicKey]) -> None:
        self.root, self.settings, self.device = root, settings, device
        self._keys = list(trusted_keys)
        self._models: Dict[str, Dict[str, ServedModel]] = {}
        self._active: Dict[str, str] = {}
        self._failures: Dict[Tuple[str, str], str] = {}  # (model, version) -> why it is not loaded
        self._notes: Dict[str, str] = {}  # model -> why it serves what it serves (fallback, pointer)
        self._wanted: Set[str] = set()  # models that should serve (strict readiness)
        self._fakes: Dict[str, Callable[[], Backend]] = {}
        self._lock = threading.Lock()  # guards the dicts
        self._load_lock = threading.Lock()  # one load/unload at a time: loads are slow and memory-hungry

    # --- what is on disk -------------------------------------------------------------------

    def layout(self) -> Layout:
        """The models and versions on disk (plus fake models), and models that cannot be listed."""
        found = scan(self.root)
        for name in self._fakes:
            found.versions[name] = ["1"]
        return found

    def available(self) -> Dict[str, List[str]]:
        """Model name → version directories on disk (ASCII digits), lowest first."""
        return self.layout().versions

    def add_fake(self, name: str, factory: Callable[[], Backend]) -> None:
        """Offer a model served by a backend built by ``factory`` with no bundle (tests, demos)."""
        self._fakes[name] = factory

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
            with self._lock:
                self._wanted.add(name)
                previous = self._active.get(name)
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
            with self._lock:
                existing = self._models.get(name, {}).get(version)
            if existing is not None and existing.ready:
                return existing
            model = self._start(name, version, settings, replacing=None)
            self._install(name, version, model, make_active=False)
            return model

    def promote(self, name: str, version: str) -> None:
        """Make a loaded (staged) version the active one: write the pointer, unload the one it replaces."""
        with self._load_lock:
            with self._lock:
                model = self._models.get(name, {}).get(version)
                previous = self._active.get(name)
            if model is None or not model.ready:
                raise ModelNotReadyError(f"cannot promote '{name}' version {version}: it is not loaded and ready")
            if previous == version:
                return
            self._write_pointer(name, version, previous)
            with self._lock:
                self._active[name] = version
                self._wanted.add(name)
                self._notes.pop(name, None)
                old = self._models.get(name, {}).pop(previous, None) if previous else None
            if old is not None:
                old.stop(self.settings.drain_timeout_s)
            log.info("model %s: version %s is active (was %s)", name, version, previous)

    def unload(self, name: str, version: Optional[str] = None) -> None:
        """Stop serving ``name`` (every version, or one), draining queues first; the pointer is untouched."""
        with self._load_lock:
            with self._lock:
                versions = self._models.get(name, {})
                if version is None:
                    stopping = list(versions.values())
                    self._models.pop(name, None)
                    self._active.pop(name, None)
                    self._wanted.discard(name)
                else:
                    one = versions.pop(version, None)
                    stopping = [one] if one is not None else []
                    if one is not None and self._active.get(name) == version:
                        self._active.pop(name, None)
            if not stopping:
                which = f" at version {version}" if version else ""
                raise ModelNotFoundError(f"model '{name}' is not loaded{which}")
            for model in stopping:
                model.stop(self.settings.drain_timeout_s)

    # --- start: no writes -------------------------------------------------------------------

    def load_all(self) -> None:
        """Serve every model found as the pointer (or its absence) says; failures are logged and indexed."""
        layout = self.layout()
        for name, ignored in layout.ignored.items():
            log.warning("model %s: ignoring %s (not version numbers)", name, ", ".join(map(repr, ignored)))
        for name, problem in layout.problems.items():
            log.error("model %s: %s (%s)", name, problem, self.root)
        for name in layout.names():
            with self._lock:
                self._wanted.add(name)
            if name in layout.problems:
                continue  # indexed with its reason
            with self._load_lock:
                self._restore(name, layout.versions.get(name, []))

    def _restore(self, name: str, on_disk: List[str]) -> None:
        candidates, note = self._startup_candidates(name, on_disk)
        for version in candidates:
            try:
                model = self._start(name, version, None, replacing=None)
            except EdgeRuntimeError:
                continue  # recorded with its reason
            if version != candidates[0]:
                first = self._failures.get((name, candidates[0]), "failed")
                note = f"version {candidates[0]} failed ({first}); serving version {version} instead"
                log.warning("model %s: %s", name, note)
            self._install(name, version, model, make_active=True, note=note)
            return

    def _startup_candidates(self, name: str, on_disk: List[str]) -> Tuple[List[str], str]:
        """Versions to try in order: the pointer's active then last good, else every version, highest first."""
        pointer: Optional[ActiveVersion] = None
        note = ""
        if name not in self._fakes and self.root is not None:
            try:
                pointer = read_pointer(self.root / name)
            except PointerError as exc:
                note = f"{exc}: ignored, serving the highest version that loads"
                log.error("model %s: %s", name, note)
        if pointer is None:
            return list(reversed(on_disk)), note
        candidates = [pointer.active]
        if pointer.last_good is not None and pointer.last_good != pointer.active:
            candidates.append(pointer.last_good)
        return candidates, note

    # --- one load -----------------------------------------------------------------------------

    def _pick(self, name: str, version: Optional[str]) -> str:
        layout = self.layout()
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
            with self._lock:
                self._failures[(name, version)] = public
            raise type(exc)(f"failed to load '{name}' version {version}: {public}") from exc

    def _start_unrecorded(self, name: str, version: str, settings: RuntimeSettings,
                          replacing: Optional[str]) -> ServedModel:
        bundle: Optional[VerifiedBundle] = None
        if name in self._fakes:
            factory = self._fakes[name]
        else:
            assert self.root is not None
            bundle = open_bundle(self.root / name / version, self._keys)
            backend = self.device.backend
            factory = lambda: create_backend(backend)  # noqa: E731
        used = self._memory_used(name, {version, replacing})
        budget = self.device.memory_budget_mb
        recorded = memory_budget.recorded_mb(bundle)
        label = f"'{name}' version {version}"
        if recorded is not None:
            memory_budget.check_fits(label, recorded, used, budget, measured=False)
        model = ServedModel(name, version, factory, bundle, self.device, settings)
        before = memory_budget.resident_mb()
        model.start()
        after = memory_budget.resident_mb()
        measured = None if before is None or after is None else max(0.0, after - before)
        model.memory_mb = recorded if recorded is not None else (measured or 0.0)
        if recorded is None and measured is not None:
            try:
                memory_budget.check_fits(label, measured, used, budget, measured=True)
            except memory_budget.MemoryBudgetError:
                model.stop(self.settings.drain_timeout_s)
                raise
        log.info("model %s version %s ready (%s, %s, %.0f MiB)", name, version, model.platform, model.artifact,
                 model.memory_mb)
        return model

    def _memory_used(self, name: str, replaced: Set[Optional[str]]) -> float:
        with self._lock:
            return sum(model.memory_mb for model_name, versions in self._models.items()
                       for version, model in versions.items() if not (model_name == name and version in replaced))

    def _install(self, name: str, version: str, model: ServedModel, make_active: bool,
                 note: Optional[str] = None) -> None:
        """Put a started model in place; stop what it replaces (the same version, the old active one)."""
        with self._lock:
            versions = self._models.setdefault(name, {})
            replaced = [versions.get(version)]
            versions[version] = model
            if make_active:
                previous = self._active.get(name)
                self._active[name] = version
                if previous not in (None, version):
                    replaced.append(versions.pop(previous, None))
            self._failures.pop((name, version), None)
            if note is not None:
                self._notes[name] = note
        for old in replaced:
            if old is not None and old is not model:
                old.stop(self.settings.drain_timeout_s)

    def _write_pointer(self, name: str, version: str, previous: Optional[str]) -> None:
        if name in self._fakes or self.root is None:
            return
        try:
            current = read_pointer(self.root / name)
        except PointerError:
            current = None  # logged at start; an explicit act replaces it
        pointer = next_pointer(current, version, previous)
        try:
            write_pointer(self.root / name, pointer)
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

    # --- serving ------------------------------------------------------------------------------

    def get(self, name: str, version: Optional[str] = None) -> ServedModel:
        """The ready model (version), or 404 (unknown model/version) / 503 (known, not serving)."""
        model: Optional[ServedModel] = None
        with self._lock:
            versions = self._models.get(name)
            if versions is not None:
                model = versions.get(version or self._active.get(name, ""))
                if model is not None and model.state == READY:
                    return model
        return self._refuse(name, version, model)

    def _refuse(self, name: str, version: Optional[str], model: Optional[ServedModel]) -> ServedModel:
        if model is not None:
            raise ModelNotReadyError(
                f"Request for unknown model: '{name}' version {model.version} is not at ready state "
                f"({model.state.lower()})")
        known = name in self._models or name in self.layout().names()
        if not known:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        if version:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' version {version} is not found")
        raise ModelNotReadyError(
            f"Request for unknown model: '{name}' has no available versions (model '{name}' is not loaded"
            f"{': ' + self._reason(name) if self._reason(name) else ''})")

    def _reason(self, name: str) -> str:
        with self._lock:
            if self._notes.get(name):
                return self._notes[name]
            reasons = [f"version {v}: {why}" for (n, v), why in sorted(self._failures.items()) if n == name]
        problem = self.layout().problems.get(name)
        return "; ".join(([problem] if problem else []) + reasons)

    def loaded(self) -> List[ServedModel]:
        """Every loaded model version (for statistics and metrics)."""
        with self._lock:
            return [model for versions in self._models.values() for model in versions.values()]

    def loaded_versions(self, name: str) -> List[str]:
        """The versions of ``name`` that are loaded, lowest first."""
        with self._lock:
            return sorted(self._models.get(name, {}), key=version_key)

    def active_version(self, name: str) -> Optional[str]:
        """The version ``/v2/models/<name>`` serves, if any."""
        with self._lock:
            return self._active.get(name)

    def ready(self) -> bool:
        """Strict readiness: every model that should serve has a ready active version."""
        with self._lock:
            for name in self._wanted:
                model = self._models.get(name, {}).get(self._active.get(name, ""))
                if model is None or not model.ready:
                    return False
        return True

    def index(self) -> List[Dict[str, str]]:
        """Triton's repository index: one entry per model version (name, version, state, reason)."""
        layout = self.layout()
        with self._lock:
            models = {name: dict(versions) for name, versions in self._models.items()}
            active, failures, notes = dict(self._active), dict(self._failures), dict(self._notes)
        names = set(layout.names()) | set(models) | {name for name, _ in failures}
        entries = []
        for name in sorted(names):
            versions = set(layout.versions.get(name, [])) | set(models.get(name, {}))
            versions |= {v for n, v in failures if n == name}
            if not versions:
                reason = layout.problems.get(name, "no versions")
                entries.append({"name": name, "version": "", "state": UNAVAILABLE, "reason": reason})
            for version in sorted(versions, key=version_key):
                model = models.get(name, {}).get(version)
                if model is not None:
                    reason = notes.get(name, "") if active.get(name) == version else "loaded beside the active version"
                    entries.append({"name": name, "version": version, "state": model.state, "reason": reason})
                else:
                    reason = failures.get((name, version), "not loaded")
                    entries.append({"name": name, "version": version, "state": UNAVAILABLE, "reason": reason})
        return entries

    def close(self) -> None:
        """Drain and stop every model (graceful shutdown)."""
        with self._lock:
            models = [model for versions in self._models.values() for model in versions.values()]
            self._models.clear()
            self._active.clear()
        for model in models:
            model.stop(self.settings.drain_timeout_s)

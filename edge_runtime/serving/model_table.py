"""What the repository serves, in memory: loaded models by name and version, and why others are not.

The table answers every request (:meth:`ModelTable.get`, readiness, statistics) from memory
alone: a request never touches the disk, so a flood of requests for unknown models costs a dict
lookup each, not a repository scan. What the table knows of the disk is a snapshot
(:meth:`ModelTable.remember`) that the repository takes at start and at each explicit act (load,
activate, stage, promote, unload). A model put on disk after that and never loaded is therefore
"not found" for inference until someone loads it, as in Triton's explicit model control mode; the
repository index, an explicit request, reads the disk itself and lists it.

Answers follow Triton's texts: an unknown model or version is a 404 ``Request for unknown
model: 'X' is not found``; a known model with no ready version is a 503 ``... has no available
versions`` with the reason (the load failure, the fallback note, the unreadable directory).
"""

from __future__ import annotations

import threading
from typing import Dict, FrozenSet, List, Optional, Set, Tuple

from edge_runtime.errors import ModelNotFoundError, ModelNotReadyError
from edge_runtime.serving.active_version import version_key
from edge_runtime.serving.model import READY, UNAVAILABLE, ServedModel
from edge_runtime.serving.repository_layout import Layout


class ModelTable:
    """Served models by name and version, the active version of each, failures and notes; thread-safe."""

    def __init__(self) -> None:
        self._models: Dict[str, Dict[str, ServedModel]] = {}
        self._active: Dict[str, str] = {}
        self._failures: Dict[Tuple[str, str], str] = {}  # (model, version) -> why it is not loaded
        self._notes: Dict[str, str] = {}  # model -> why it serves what it serves (fallback, pointer)
        self._wanted: Set[str] = set()  # models that should serve (strict readiness)
        self._on_disk: FrozenSet[str] = frozenset()  # model names of the last snapshot of the disk
        self._problems: Dict[str, str] = {}  # model -> why its directory could not be listed (same snapshot)
        self._fakes: Set[str] = set()
        self._lock = threading.Lock()

    # --- what the repository tells it ------------------------------------------------------------

    def remember(self, layout: Layout) -> None:
        """Take ``layout`` as what the disk holds, until the next explicit act."""
        with self._lock:
            self._on_disk = frozenset(layout.names())
            self._problems = dict(layout.problems)

    def add_fake(self, name: str) -> None:
        """Know a model that has no directory (a fake backend's)."""
        with self._lock:
            self._fakes.add(name)

    def want(self, name: str) -> None:
        """Mark ``name`` as a model that should serve (strict readiness counts it)."""
        with self._lock:
            self._wanted.add(name)

    def find(self, name: str, version: str) -> Optional[ServedModel]:
        """The loaded ``version`` of ``name``, ready or not."""
        with self._lock:
            return self._models.get(name, {}).get(version)

    def failure(self, name: str, version: str) -> Optional[str]:
        """Why ``version`` of ``name`` failed to load, if it did."""
        with self._lock:
            return self._failures.get((name, version))

    def record_failure(self, name: str, version: str, reason: str) -> None:
        """Remember why a version did not load (answered in the index and in 503s)."""
        with self._lock:
            self._failures[(name, version)] = reason

    def memory_used(self, name: str, replaced: Set[Optional[str]]) -> float:
        """MiB used by the loaded models, leaving out the versions of ``name`` in ``replaced``."""
        with self._lock:
            return sum(model.memory_mb for model_name, versions in self._models.items()
                       for version, model in versions.items() if not (model_name == name and version in replaced))

    def install(self, name: str, version: str, model: ServedModel, make_active: bool,
                note: Optional[str] = None) -> List[ServedModel]:
        """Put a started model in place; the models it replaced, which the caller stops."""
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
        return [old for old in replaced if old is not None and old is not model]

    def make_active(self, name: str, version: str) -> Optional[ServedModel]:
        """Make a loaded version the active one; the previously active model, which the caller stops."""
        with self._lock:
            previous = self._active.get(name)
            self._active[name] = version
            self._wanted.add(name)
            self._notes.pop(name, None)
            if previous is None or previous == version:
                return None
            return self._models.get(name, {}).pop(previous, None)

    def remove(self, name: str, version: Optional[str]) -> List[ServedModel]:
        """Take ``name`` (every version, or one) out of service; the removed models, which the caller stops."""
        with self._lock:
            versions = self._models.get(name, {})
            if version is None:
                self._models.pop(name, None)
                self._active.pop(name, None)
                self._wanted.discard(name)
                return list(versions.values())
            one = versions.pop(version, None)
            if one is None:
                return []
            if self._active.get(name) == version:
                self._active.pop(name, None)
            return [one]

    def clear(self) -> List[ServedModel]:
        """Take every model out of service; the removed models, which the caller stops."""
        with self._lock:
            models = [model for versions in self._models.values() for model in versions.values()]
            self._models.clear()
            self._active.clear()
        return models

    # --- requests: memory only --------------------------------------------------------------------

    def get(self, name: str, version: Optional[str] = None, hold: bool = False) -> ServedModel:
        """The ready model (version), or 404 (unknown model/version) / 503 (known, not serving).

        ``hold``: the model is held for the caller (who must ``release()`` it), taken under the lock
        that a swap takes it out of the table with, so its stop() waits for the caller.
        """
        model: Optional[ServedModel] = None
        with self._lock:
            versions = self._models.get(name)
            if versions is not None:
                model = versions.get(version or self._active.get(name, ""))
                if model is not None and model.state == READY:
                    if hold:
                        model.hold()
                    return model
        return self._refuse(name, version, model)

    def _refuse(self, name: str, version: Optional[str], model: Optional[ServedModel]) -> ServedModel:
        if model is not None:
            raise ModelNotReadyError(
                f"Request for unknown model: '{name}' version {model.version} is not at ready state "
                f"({model.state.lower()})")
        with self._lock:
            known = name in self._models or name in self._on_disk or name in self._fakes
            reason = self._reason(name) if known and not version else ""
        if not known:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' is not found")
        if version:
            raise ModelNotFoundError(f"Request for unknown model: '{name}' version {version} is not found")
        raise ModelNotReadyError(
            f"Request for unknown model: '{name}' has no available versions (model '{name}' is not loaded"
            f"{': ' + reason if reason else ''})")

    def _reason(self, name: str) -> str:
        """Why ``name`` does not serve (call with the lock held)."""
        if self._notes.get(name):
            return self._notes[name]
        reasons = [f"version {v}: {why}" for (n, v), why in sorted(self._failures.items()) if n == name]
        problem = self._problems.get(name)
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

    def index(self, layout: Layout) -> List[Dict[str, str]]:
        """Triton's repository index over ``layout`` (the disk now) and the table: one entry per version."""
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

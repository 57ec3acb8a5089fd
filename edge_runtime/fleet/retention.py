"""How many versions of a model stay on the device, and crash-safe removal of the others.

Storage on a device is small (a Xavier NX has 16 GB of eMMC), so after an install at most
``keep_versions`` version directories stay per model, the oldest removed first. Never removed:
the active version and the last good one (the pointer's), the one just installed, and, when
there is no pointer, the highest one (what the repository serves then).

A removal first renames the version aside to a hidden name (``.deleting-<version>``) and flushes
the directory, then deletes the tree: a crash midway leaves a hidden folder the repository
ignores, never a half-deleted version that looks whole. :func:`remove_install_leftovers` clears
those, and the staging directories of installs that were killed, before the next install.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import List, Set

from edge_runtime.atomic_io import fsync_dir
from edge_runtime.errors import OutputError, PointerError
from edge_runtime.serving.active_version import read_pointer, sorted_versions

log = logging.getLogger(__name__)

STAGING_NAME = "incoming"  # an install unpacks into .incoming.tmp-XXXX in the model's folder
_STAGING_PREFIX = f".{STAGING_NAME}.tmp-"
_DELETING_PREFIX = ".deleting-"


def apply_retention(model_dir: Path, keep_versions: int, installed: str) -> List[str]:
    """Remove the oldest versions beyond ``keep_versions`` (never a protected one); the versions removed."""
    try:
        pointer = read_pointer(model_dir)
    except PointerError as exc:
        log.warning("%s: %s: no version removed until the pointer is valid again", model_dir, exc)
        return []
    versions = on_disk_versions(model_dir)
    protected: Set[str] = {installed}
    if pointer is not None:
        protected.add(pointer.active)
        if pointer.last_good is not None:
            protected.add(pointer.last_good)
    elif versions:
        protected.add(versions[-1])
    excess = len(versions) - keep_versions
    removed: List[str] = []
    for version in versions:
        if excess <= len(removed):
            break
        if version not in protected and remove_version(model_dir, version):
            removed.append(version)
    return removed


def on_disk_versions(model_dir: Path) -> List[str]:
    """The version directories of a model (not links to them), lowest first."""
    try:
        names = [entry.name for entry in os.scandir(model_dir) if entry.is_dir(follow_symlinks=False)]
    except OSError as exc:
        log.warning("%s: cannot be listed: %s", model_dir, exc.strerror or exc)
        return []
    return sorted_versions(names)


def remove_version(model_dir: Path, version: str) -> bool:
    """Rename ``version`` aside, flush the folder, delete the tree; False (logged) when it could not be removed."""
    aside = model_dir / f"{_DELETING_PREFIX}{version}"
    try:
        if os.path.lexists(aside):
            shutil.rmtree(aside)  # a removal killed midway before
        os.rename(model_dir / version, aside)
        fsync_dir(model_dir)
    except (OSError, OutputError) as exc:
        log.warning("%s: version %s kept: cannot remove it (%s)", model_dir, version, exc)
        return False
    try:
        shutil.rmtree(aside)
    except OSError as exc:
        log.warning("%s: version %s removed, but %s is left (%s)", model_dir, version, aside, exc)
    log.info("%s: version %s removed (retention)", model_dir, version)
    return True


def remove_install_leftovers(model_dir: Path) -> None:
    """Delete staging and half-removed directories that killed installs and removals left (hidden, ignored)."""
    try:
        entries = [e for e in os.scandir(model_dir) if e.name.startswith((_STAGING_PREFIX, _DELETING_PREFIX))]
    except OSError:
        return
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except OSError as exc:
            log.warning("%s: cannot remove a leftover of an earlier install: %s", entry.path, exc)

"""What the repository directory offers: ``<root>/<model>/<version>/``, read without trusting it.

A model directory that cannot be listed, a version directory with an odd name ('²', 'latest'),
a FIFO, socket or device file where a directory is expected: each is left out or reported for its
own model only, never raised for the whole repository (one bad entry must not stop the others from
serving). Nothing here opens a file: listing uses ``scandir`` and its cached type checks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from edge_runtime.serving.active_version import is_version_name, sorted_versions

log = logging.getLogger(__name__)


@dataclass
class Layout:
    """Model name → version names on disk (lowest first), and models that could not be listed."""

    versions: Dict[str, List[str]] = field(default_factory=dict)
    problems: Dict[str, str] = field(default_factory=dict)  # model → why it could not be listed
    ignored: Dict[str, List[str]] = field(default_factory=dict)  # model → entries that are not versions

    def names(self) -> List[str]:
        """Every model found, listable or not."""
        return sorted(set(self.versions) | set(self.problems))


def is_model_name(name: str) -> bool:
    """A directory name that can be a model: not hidden, printable, valid UTF-8 (JSON can carry it)."""
    if not name or name.startswith(".") or not name.isprintable():
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from the file system come back as surrogates
        return False
    return True


def scan(root: Optional[Path]) -> Layout:
    """The repository's models and versions; a model whose directory cannot be listed is a problem."""
    layout = Layout()
    if root is None:
        return layout
    try:
        entries = list(os.scandir(root))
    except FileNotFoundError:
        return layout
    except OSError as exc:
        log.error("repository %s cannot be listed: %s", root, exc.strerror or exc)
        return layout
    for entry in entries:
        if not is_model_name(entry.name) or not _is_dir(entry):
            continue
        try:
            names = [v.name for v in os.scandir(entry.path) if _is_dir(v)]
        except OSError as exc:
            layout.problems[entry.name] = f"the model directory cannot be listed ({exc.strerror or exc})"
            continue
        versions = sorted_versions(names)
        ignored = sorted(n for n in names if not is_version_name(n) and not n.startswith("."))
        if ignored:
            layout.ignored[entry.name] = ignored
        if versions:
            layout.versions[entry.name] = versions
    return layout


def _is_dir(entry: Any) -> bool:  # an os.DirEntry: not subscriptable on Python 3.8
    try:
        return entry.is_dir()  # follows a link to a directory, as a repository may use them
    except OSError:
        return False

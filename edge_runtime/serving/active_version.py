"""The active-version pointer of one model: ``<repository>/<model>/active.json``.

It holds ``{"active": "3", "last_good": "2"}``: the version that serves, and the one that served
before it (the fallback when the active one fails to load). Only an explicit act writes it: an
operator's load request or ``edge-runtime activate``, or the fleet agent after its health gate
(through :meth:`ModelRepository.promote`). It is written atomically (temp file, fsync, rename,
fsync dir), so a reader sees the old pointer or the new one, never half.

A pointer that cannot be read or does not validate (not JSON, wrong keys, not a version number,
not a regular file) raises :class:`PointerError`; the repository logs it, shows it in the index
and serves as if there were no pointer (the highest version that verifies and loads): every
version on disk is a signed bundle, and whoever could corrupt the pointer could also delete it.
The pointer is never rewritten to repair it: that stays an explicit act.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from edge_runtime.atomic_io import remove_stale_temp_files, write_bytes_atomic
from edge_runtime.bundle import NotARegularFile, open_regular, read_limited
from edge_runtime.errors import PointerError

POINTER_NAME = "active.json"
MAX_POINTER_BYTES = 4096
# ASCII digits only: '²' passes str.isdigit() and then fails int().
_VERSION = re.compile(r"[0-9]{1,18}")


__all__ = [
    "MAX_POINTER_BYTES", "POINTER_NAME", "ActiveVersion", "PointerError", "is_version_name", "next_pointer",
    "read_pointer", "record_active", "sorted_versions", "startup_versions", "version_key", "write_pointer",
]


def is_version_name(name: str) -> bool:
    """True for a version directory name: ASCII digits (at most 18, so it fits an int64)."""
    return _VERSION.fullmatch(name) is not None


def version_key(name: str) -> Tuple[int, str]:
    """Sort key of version names: numeric, ties ('1' and '01') by text."""
    return int(name), name


def sorted_versions(names: List[str]) -> List[str]:
    """The version names among ``names``, lowest first."""
    return sorted((n for n in names if is_version_name(n)), key=version_key)


@dataclass(frozen=True)
class ActiveVersion:
    """What a model serves (``active``) and what it falls back to (``last_good``)."""

    active: str
    last_good: Optional[str] = None

    def __post_init__(self) -> None:
        for key in ("active", "last_good"):
            value = getattr(self, key)
            if value is None and key == "last_good":
                continue
            if not isinstance(value, str) or not is_version_name(value):
                raise PointerError(f"{POINTER_NAME}: '{key}' must be a version number as a string, got {value!r}")

    def to_json(self) -> bytes:
        """The file's bytes."""
        return (json.dumps({"active": self.active, "last_good": self.last_good}, sort_keys=True) + "\n").encode()


def read_pointer(model_dir: Path) -> Optional[ActiveVersion]:
    """The model's pointer; None when there is none; PointerError when it cannot be trusted."""
    path = model_dir / POINTER_NAME
    try:
        fd = open_regular(path)  # never blocks on a FIFO, never follows a link
    except FileNotFoundError:
        return None
    except NotARegularFile as exc:
        raise PointerError(f"{POINTER_NAME}: {exc}") from None
    except OSError as exc:
        raise PointerError(f"{POINTER_NAME}: cannot read ({exc.strerror or exc})") from exc
    data = read_limited(fd, MAX_POINTER_BYTES)
    if data is None:
        raise PointerError(f"{POINTER_NAME}: larger than {MAX_POINTER_BYTES} bytes")
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise PointerError(f"{POINTER_NAME}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or set(document) - {"active", "last_good"} or "active" not in document:
        raise PointerError(f"{POINTER_NAME}: expected {{\"active\": \"N\", \"last_good\": \"M\" or null}}")
    return ActiveVersion(document["active"], document.get("last_good"))


def next_pointer(current: Optional[ActiveVersion], version: str, serving: Optional[str] = None) -> ActiveVersion:
    """The pointer after ``version`` is made active: the version that served (or was active) becomes last good."""
    last_good: Optional[str] = None
    if serving is not None and serving != version:
        last_good = serving  # it served until now
    elif current is not None:
        last_good = current.active if current.active != version else current.last_good
    return ActiveVersion(version, None if last_good == version else last_good)


def write_pointer(model_dir: Path, pointer: ActiveVersion) -> None:
    """Replace the model's pointer atomically (OutputError when the directory cannot be written).

    Temporary files of earlier writers that were killed mid-write are removed first.
    """
    remove_stale_temp_files(model_dir / POINTER_NAME)
    write_bytes_atomic(model_dir / POINTER_NAME, pointer.to_json())


def record_active(model_dir: Path, version: str, serving: Optional[str]) -> ActiveVersion:
    """Write the pointer that makes ``version`` active (an explicit act); an invalid old pointer is replaced.

    OutputError when the directory cannot be written.
    """
    try:
        current = read_pointer(model_dir)
    except PointerError:
        current = None  # logged at start; an explicit act replaces it
    pointer = next_pointer(current, version, serving)
    write_pointer(model_dir, pointer)
    return pointer


def startup_versions(model_dir: Optional[Path], on_disk: List[str]) -> Tuple[List[str], str]:
    """Versions to try at start, in order, and a note for the index.

    The pointer's active version then its last good one; with no pointer (or no ``model_dir``: a fake
    model), every version on disk, highest first. An invalid pointer is ignored, and the note says why.
    """
    try:
        pointer = None if model_dir is None else read_pointer(model_dir)
    except PointerError as exc:
        return list(reversed(on_disk)), f"{exc}: ignored, serving the highest version that loads"
    if pointer is None:
        return list(reversed(on_disk)), ""
    if pointer.last_good is not None and pointer.last_good != pointer.active:
        return [pointer.active, pointer.last_good], ""
    return [pointer.active], ""

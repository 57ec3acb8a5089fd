"""Hand-made tar members for the tests that attack the bundle installer (links, devices, traversal, extras)."""

from __future__ import annotations

import io
import tarfile


def add_member(tar: tarfile.TarFile, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"x",
               link: str = "") -> None:
    """Append one hand-made member of any type and name (``data`` only for a regular file)."""
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

#!/usr/bin/env python3
"""Render a systemd unit template from systemd/ (the @PREFIX@ and @MEMORY_MAX@ placeholders).

    python3 scripts/lib/render_unit.py TEMPLATE OUT --prefix /opt/edge-runtime --memory-max 6144M

OUT ``-`` writes to standard output. An OUT whose content is already the rendered text is left untouched
(its mtime too), so a second identical install changes nothing. Exit status: 0 ok, 1 error (one line on
stderr), 2 usage. Runs on the device's system Python (3.8 on JetPack 5): standard library only.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import List, Optional

# systemd's MemoryMax=: bytes with an optional K/M/G/T suffix (base 1024), a percentage, or infinity.
_MEMORY_MAX = re.compile(r"^(infinity|[1-9][0-9]*[KMGT]?|[1-9][0-9]?(\.[0-9]+)?%|100%)$")
# An absolute path that needs no quoting or escaping in a unit file: no spaces, no % (a specifier), no
# backslash or quotes, no newline; nor .. components.
_PREFIX = re.compile(r"^(/[A-Za-z0-9._+-]+)+$")
_PLACEHOLDER = re.compile(r"@[A-Z_]+@")


class RenderError(Exception):
    """A value or template that cannot make a correct unit file."""


def render(template: str, prefix: str, memory_max: str) -> str:
    """The unit text: ``template`` with its placeholders filled in, after checking both values."""
    if not _PREFIX.match(prefix) or "/../" in prefix + "/" or "/./" in prefix + "/":
        raise RenderError(f"--prefix must be an absolute path of letters, digits and ._+- (got {prefix!r})")
    if not _MEMORY_MAX.match(memory_max):
        raise RenderError(f"--memory-max must be bytes with K/M/G/T, a percentage or 'infinity' (got {memory_max!r})")
    text = template.replace("@PREFIX@", prefix.rstrip("/") or "/").replace("@MEMORY_MAX@", memory_max)
    left = sorted(set(_PLACEHOLDER.findall(text)))
    if left:
        raise RenderError(f"template has placeholders this renderer does not fill: {', '.join(left)}")
    return text


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically (mode 0644) unless it already holds exactly that; True if written."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, str(path))
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return True


def main(argv: Optional[List[str]] = None) -> int:
    """Command line: render TEMPLATE into OUT (or stdout); report errors on one line."""
    parser = argparse.ArgumentParser(description="Render a systemd unit template (@PREFIX@, @MEMORY_MAX@).")
    parser.add_argument("template", type=Path, help="the unit template (systemd/*.service)")
    parser.add_argument("out", help="where to write the unit, or - for standard output")
    parser.add_argument("--prefix", required=True, help="install prefix, e.g. /opt/edge-runtime")
    parser.add_argument("--memory-max", required=True, help="MemoryMax= value, e.g. 6144M or infinity")
    args = parser.parse_args(argv)
    try:
        text = render(args.template.read_text(encoding="utf-8"), args.prefix, args.memory_max)
        if args.out == "-":
            sys.stdout.write(text)
        else:
            write_if_changed(Path(args.out), text)
    except (RenderError, OSError, UnicodeDecodeError) as exc:
        print(f"render_unit: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

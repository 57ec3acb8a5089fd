"""Write mypy-readable TensorRT stubs into ``typings/`` from the installed ``tensorrt-stubs`` package.

``tensorrt-stubs`` (10.13) installs ``tensorrt/__init__.pyi`` and ``tensorrt_bindings/*.pyi`` but no
``py.typed`` marker, so mypy skips them, and its generated stubs have a few lines that are not valid
Python: a parameter named ``in`` (a keyword), a non-default parameter after defaults in
``add_scale_nd``, and an import of ``tensorrt_libs`` (a package that only the real wheel has). This
copies them with those lines fixed; ``pyproject.toml`` points mypy's ``mypy_path`` at the copy.

Usage: python scripts/lib/tensorrt_typings.py [OUT_DIR]   (default: typings/)
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path

_FIXES = (
    (re.compile(r"\bin: "), "in_: "),  # parameter named 'in'
    (re.compile(r"(def add_scale_nd\(.*?), channel_axis: int\)"), r"\1, channel_axis: int = 0)"),
    (re.compile(r"^import tensorrt_libs as tensorrt_libs\n", re.M), ""),
    (re.compile(r", 'tensorrt_libs'"), ""),
)


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"{name} stubs not found: pip install --no-deps tensorrt-stubs")
    return Path(next(iter(spec.submodule_search_locations)))


def main(argv: list[str]) -> int:
    out = Path(argv[1] if len(argv) > 1 else "typings")
    for package in ("tensorrt", "tensorrt_bindings"):
        source, target = _package_dir(package), out / package
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for stub in sorted(source.glob("*.pyi")):
            text = stub.read_text()
            for pattern, replacement in _FIXES:
                text = pattern.sub(replacement, text)
            (target / stub.name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

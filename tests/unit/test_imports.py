"""Every edge_runtime module imports with only the base dependencies (as Polygraphy's test_dependencies).

Heavy and optional libraries are imported inside the code that needs them (DESIGN rule 3), so a
device without an extra still starts, and says which extra is missing only when it is used. Each
check runs in a fresh interpreter whose ``sys.meta_path`` refuses the blocked packages, whatever
this environment has installed; it also checks that ``edge_runtime`` never pulls in torch, export
or fleet_server (the dependencies point one way).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Sequence

HEAVY = ("onnxruntime", "tensorrt", "pycuda", "torch", "onnx", "tritonclient")
SERVER_EXTRA = ("flask", "werkzeug", "waitress", "orjson", "prometheus_client")
NEVER_IMPORTED = ("torch", "export", "fleet_server")

# Run as `python -c CHILD PACKAGE BLOCKED SKIP ONLY`: JSON arguments; prints a JSON report.
CHILD = r"""
import importlib, importlib.abc, json, pkgutil, sys, traceback

package, blocked, skip, only = (json.loads(arg) for arg in sys.argv[1:5])

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ImportError("blocked by the test: " + name)
        return None

preloaded = sorted(name for name in sys.modules if name.split(".")[0] in blocked)
sys.meta_path.insert(0, Refuse())
failures = {}

def failed(name, exc):
    failures[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()

def chosen(name):
    in_scope = not only or any(name == p or name.startswith(p + ".") for p in only)
    return in_scope and not any(name == p or name.startswith(p + ".") for p in skip)

try:
    root = importlib.import_module(package)
    # a subpackage that fails here is imported (and reported) below with its error
    walked = pkgutil.walk_packages(root.__path__, package + ".", onerror=lambda name: None)
    names = [package] + [info.name for info in walked]
except Exception as exc:
    failed(package, exc)
    names = []
imported = []
for name in names:
    if name.rsplit(".", 1)[-1] == "__main__" or not chosen(name):
        continue
    try:
        importlib.import_module(name)
        imported.append(name)
    except Exception as exc:
        failed(name, exc)
print(json.dumps({"imported": imported, "failures": failures, "preloaded": preloaded,
                  "modules": sorted({name.split(".")[0] for name in sys.modules})}))
"""


def _import_all(package: str, blocked: Sequence[str], skip: Sequence[str] = (), only: Sequence[str] = (),
                path: Sequence[str] = ()) -> Dict[str, object]:
    """Import every module of ``package`` in a fresh interpreter that refuses ``blocked``."""
    env_path = [str(Path(__file__).resolve().parents[2]), *path]
    code = f"import sys; sys.path[:0] = {env_path!r}\n" + CHILD
    result = subprocess.run(
        [sys.executable, "-c", code, *(json.dumps(arg) for arg in (package, list(blocked), list(skip), list(only)))],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    report: Dict[str, object] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def _describe(failures: object) -> str:
    assert isinstance(failures, dict)
    return "modules that do not import:\n" + "\n".join(f"  {name}: {error}" for name, error in sorted(failures.items()))


def _check(report: Dict[str, object]) -> List[str]:
    assert report["preloaded"] == [], f"imported before the test could block them: {report['preloaded']}"
    assert report["failures"] == {}, _describe(report["failures"])
    modules = report["modules"]
    assert isinstance(modules, list)
    leaked = [name for name in NEVER_IMPORTED if name in modules]
    assert leaked == [], f"edge_runtime imported {leaked}"
    imported = report["imported"]
    assert isinstance(imported, list)
    return imported


def test_every_module_but_the_server_imports_with_only_the_base_dependencies() -> None:
    imported = _check(_import_all("edge_runtime", [*HEAVY, *SERVER_EXTRA], skip=["edge_runtime.server"]))
    for name in ("edge_runtime.backends.onnxruntime", "edge_runtime.bundle.fingerprint", "edge_runtime.host_info",
                 "edge_runtime.cli", "edge_runtime.serving.repository"):
        assert name in imported


def test_server_modules_import_with_the_server_extra_and_no_inference_library() -> None:
    imported = _check(_import_all("edge_runtime", HEAVY, only=["edge_runtime.server"]))
    assert "edge_runtime.server.app" in imported


def test_the_check_reports_an_eager_heavy_import(tmp_path: Path) -> None:
    """The harness itself: a module that imports onnxruntime at the top is listed, with its error."""
    package = tmp_path / "probe_pkg"
    (package / "inner").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "inner" / "__init__.py").write_text("")
    (package / "inner" / "eager.py").write_text("import onnxruntime\n")
    (package / "lazy.py").write_text("def run():\n    import onnxruntime\n")
    report = _import_all("probe_pkg", HEAVY, path=[str(tmp_path)])
    assert report["imported"] == ["probe_pkg", "probe_pkg.inner", "probe_pkg.lazy"]
    assert report["failures"] == {"probe_pkg.inner.eager": "ImportError: blocked by the test: onnxruntime"}

#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it). Idempotent; works on a fresh machine.
#   1. dev venv (.venv, Python 3.10+): ruff, vermin --target=3.8 on edge_runtime, mypy, pytest
#   2. device venv (.venv38, a real Python 3.8 as on JetPack 5): the runtime's tests (-m "not export")
# Extra arguments go to both pytest runs (e.g. scripts/test.sh -k bundle).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
source scripts/lib/system_packages.sh
source scripts/lib/dashboard_assets.sh

# What the integration tests drive for real: PostgreSQL and nginx (started on 127.0.0.1 by the tests through
# scripts/lib/postgres.sh and nginx.sh), Debian's Chromium (the dashboard test), the dashboard's uPlot (npm ci),
# and for the script and unit checks: the shellcheck and systemd-analyze tools.
ensure_debian_packages postgresql chromium nginx-light shellcheck systemd
ensure_dashboard_assets

ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,sync,export,fleet,dev]"
# tensorrt-stubs depends on the tensorrt wheel, which downloads libnvinfer from outside the
# registries; the stubs alone are all mypy needs.
.venv/bin/python -m pip show -q tensorrt-stubs >/dev/null 2>&1 ||
  .venv/bin/python -m pip install -q --no-deps "tensorrt-stubs==10.13.0.35.1"
.venv/bin/python scripts/lib/tensorrt_typings.py typings  # mypy-readable copy (see the script)

echo "== ruff"
.venv/bin/ruff check .
echo "== vermin (edge_runtime must run on Python 3.8)"
.venv/bin/vermin --target=3.8- --violations --no-tips --eval-annotations -q edge_runtime
echo "== mypy"
.venv/bin/mypy
echo "== pytest (Python $(.venv/bin/python -c 'import platform; print(platform.python_version())'))"
# The 200-kill OTA test runs once, below, on the device's Python 3.8 (it exercises device code only).
.venv/bin/python -m pytest --ignore=tests/integration/test_sync_kills.py "$@"
bash scripts/lib/mutation_sample.sh  # issue 18: a fixed sample of mutants; the full run is scripts/bench/mutation.py

py38=$(find_python38)
ensure_venv .venv38 "$py38" -e ".[cpu,server,sync]" "pytest>=7.4" "hypothesis>=6.80" "tritonclient[http]>=2.40" "onnx>=1.15"
echo "== pytest on Python 3.8 (device runtime only; the arm64 install test ran above: it uses the root's Python)"
# Not again on 3.8: the arm64 root runs its own Python, and the install script, units and shell scripts were
# checked above (they do not run on the device's Python).
.venv38/bin/python -m pytest -m "not export and not arm64" --ignore=tests/integration/test_install_script.py \
  --ignore=tests/integration/test_systemd_units.py --ignore=tests/integration/test_shellcheck.py "$@"

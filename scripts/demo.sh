#!/usr/bin/env bash
# The main job on the embedded default (ONNX Runtime on CPU): export the reference model for
# device_configs/x86-cpu.yaml into a signed bundle, verify it and print its report.
# Idempotent: keys are made once, the bundle is rebuilt each run. Everything lands in .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh

ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,export]"
mkdir -p .demo
[ -f .demo/keys/signing.key ] || .venv/bin/edge-runtime keygen --out .demo/keys
.venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml \
  --key .demo/keys/signing.key --out .demo/bundles/digits-cnn --force
.venv/bin/edge-runtime check .demo/bundles/digits-cnn --key .demo/keys/signing.pub

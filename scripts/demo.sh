#!/usr/bin/env bash
# The main job on the embedded default (ONNX Runtime on CPU): export the reference model for
# device_configs/x86-cpu.yaml into a signed bundle and print its report, serve it with
# edge-runtime on 127.0.0.1, query it with the unmodified Triton client (answer, latency,
# memory), then stop the server. Idempotent: keys are made once; everything lands in .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh

ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,export]" "tritonclient[http]>=2.40"
mkdir -p .demo
[ -f .demo/keys/signing.key ] || .venv/bin/edge-runtime keygen --out .demo/keys
rm -rf .demo/repository
.venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml \
  --key .demo/keys/signing.key --out .demo/repository/digits-cnn/1
.venv/bin/edge-runtime check .demo/repository/digits-cnn/1 --key .demo/keys/signing.pub

cat > .demo/runtime.yaml <<YAML
device_config: ../device_configs/x86-cpu.yaml
trusted_keys: [keys/signing.pub]
host: 127.0.0.1
port: ${EDGE_DEMO_PORT:-8000}
YAML
.venv/bin/edge-runtime serve --repository .demo/repository --config .demo/runtime.yaml > .demo/server.log 2>&1 &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:${EDGE_DEMO_PORT:-8000}/v2/health/ready" > /dev/null && break
  kill -0 $server 2>/dev/null || { cat .demo/server.log; exit 1; }
  sleep 0.2
done
.venv/bin/python scripts/demo_query.py --url "127.0.0.1:${EDGE_DEMO_PORT:-8000}" --model digits-cnn
kill -TERM $server
wait $server
echo "server stopped: $(tail -n 1 .demo/server.log)"
trap - EXIT

#!/usr/bin/env bash
# The main job on the embedded default (ONNX Runtime on CPU): export the reference model for
# device_configs/x86-cpu.yaml into a signed bundle and print its report, start the central fleet
# server (SQLite), serve the bundle with edge-runtime on 127.0.0.1 while `edge-runtime agent`
# uploads its telemetry, query it with the unmodified Triton client (answer, latency, memory), show
# what the fleet server received, then stop everything. Idempotent: keys are made once; everything
# lands in .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
source scripts/lib/dashboard_assets.sh

ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,export,fleet]" "tritonclient[http]>=2.40"
ensure_dashboard_assets || echo "(the dashboard page will answer 503 until npm ci runs; the API works)"
mkdir -p .demo
[ -f .demo/keys/signing.key ] || .venv/bin/edge-runtime keygen --out .demo/keys
rm -rf .demo/repository .demo/fleet .demo/telemetry
.venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml \
  --key .demo/keys/signing.key --out .demo/repository/digits-cnn/1
.venv/bin/edge-runtime check .demo/repository/digits-cnn/1 --key .demo/keys/signing.pub

# The central fleet server (SQLite), a device enrolled on it, an operator token for its API.
mkdir -p .demo/fleet
FLEET_PORT=${EDGE_DEMO_FLEET_PORT:-8080}
printf 'database_url: sqlite:///fleet.sqlite\nsecret_file: secret.key\n' > .demo/fleet/fleet.yaml
.venv/bin/edge-fleet migrate --config .demo/fleet/fleet.yaml
.venv/bin/edge-fleet enroll demo-device --config .demo/fleet/fleet.yaml > .demo/fleet/device-token
.venv/bin/edge-fleet operator-token create demo --config .demo/fleet/fleet.yaml > .demo/fleet/operator-token
.venv/bin/edge-fleet serve --config .demo/fleet/fleet.yaml --port "$FLEET_PORT" --workers 1 > .demo/fleet/serve.log 2>&1 &
fleet=$!

cat > .demo/runtime.yaml <<YAML
device_config: ../device_configs/x86-cpu.yaml
trusted_keys: [keys/signing.pub]
host: 127.0.0.1
port: ${EDGE_DEMO_PORT:-8000}
telemetry: {interval_s: 1, spool_path: telemetry/spool.sqlite}
YAML
cat > .demo/agent.yaml <<YAML
server_url: http://127.0.0.1:${FLEET_PORT}
device_id: demo-device
token_file: fleet/device-token
ca_bundle: null
spool_path: telemetry/spool.sqlite
poll_s: 1
YAML
.venv/bin/edge-runtime serve --repository .demo/repository --config .demo/runtime.yaml > .demo/server.log 2>&1 &
server=$!
.venv/bin/edge-runtime agent --config .demo/agent.yaml > .demo/agent.log 2>&1 &
agent=$!
trap 'kill -TERM $server $agent $fleet 2>/dev/null || true; wait $server $agent $fleet 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:${EDGE_DEMO_PORT:-8000}/v2/health/ready" > /dev/null && break
  kill -0 $server 2>/dev/null || { cat .demo/server.log; exit 1; }
  sleep 0.2
done
.venv/bin/python scripts/demo_query.py --url "127.0.0.1:${EDGE_DEMO_PORT:-8000}" --model digits-cnn
sleep 3  # one more sample and upload after the traffic
.venv/bin/python scripts/demo_fleet.py --url "http://127.0.0.1:${FLEET_PORT}" --token-file .demo/fleet/operator-token \
  --device demo-device
kill -TERM $server $agent $fleet
wait $server $agent $fleet || true
echo "server stopped: $(tail -n 1 .demo/server.log)"
trap - EXIT

#!/usr/bin/env bash
# The main job on the embedded default (ONNX Runtime on CPU): export the reference model for
# device_configs/x86-cpu.yaml into a signed bundle and print its report, start the central fleet
# server (SQLite), serve the bundle with edge-runtime on 127.0.0.1 while `edge-runtime agent`
# uploads its telemetry, query it with the unmodified Triton client (answer, latency, memory), show
# what the fleet server received; then an over-the-air update: version 2 is published to the fleet
# server and rolled out, the agent pulls it (TUF metadata and the bundle from a static file server),
# the runtime gates and switches to it. Then stop everything. Idempotent: keys are made once;
# everything lands in .demo/.
#
# scripts/demo.sh --installed: the install path instead — export the bundle, run scripts/install.sh into
# a temporary root (.demo/root: no systemd there, so it starts nothing itself), put the bundle into the
# installed repository and serve it with the installed runtime and its installed configuration, then
# query it with tritonclient as above.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/venv.sh
source scripts/lib/dashboard_assets.sh

if [ "${1:-}" = "--installed" ]; then
  ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,export,fleet]" "tritonclient[http]>=2.40"
  mkdir -p .demo
  [ -f .demo/keys/signing.key ] || .venv/bin/edge-runtime keygen --out .demo/keys
  rm -rf .demo/root .demo/installed-bundle
  .venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml \
    --key .demo/keys/signing.key --out .demo/installed-bundle/digits-cnn/1 > /dev/null
  mkdir -p .demo/root
  scripts/install.sh --root "$PWD/.demo/root" --owner "$(id -u):$(id -g)" --device-config x86-cpu \
    --trusted-key .demo/keys/signing.pub --python .venv/bin/python
  cp -r .demo/installed-bundle/digits-cnn .demo/root/var/lib/edge-runtime/repository/
  echo "== serving with the installed runtime: .demo/root/opt/edge-runtime/current/venv/bin/edge-runtime"
  .demo/root/opt/edge-runtime/current/venv/bin/edge-runtime serve --config .demo/root/etc/edge-runtime/runtime.yaml \
    --repository .demo/root/var/lib/edge-runtime/repository --port "${EDGE_DEMO_PORT:-8000}" \
    > .demo/installed-server.log 2>&1 &
  server=$!
  trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
  for _ in $(seq 150); do
    curl -sf "http://127.0.0.1:${EDGE_DEMO_PORT:-8000}/v2/health/ready" > /dev/null && break
    kill -0 $server 2>/dev/null || { cat .demo/installed-server.log; exit 1; }
    sleep 0.2
  done
  .venv/bin/python scripts/demo_query.py --url "127.0.0.1:${EDGE_DEMO_PORT:-8000}" --model digits-cnn
  kill -TERM $server
  wait $server || true
  echo "installed runtime stopped: $(tail -n 1 .demo/installed-server.log)"
  trap - EXIT
  exit 0
fi

ensure_venv .venv "${PYTHON:-python3}" -e ".[cpu,server,export,fleet]" "tritonclient[http]>=2.40"
ensure_dashboard_assets || echo "(the dashboard page will answer 503 until npm ci runs; the API works)"
mkdir -p .demo
[ -f .demo/keys/signing.key ] || .venv/bin/edge-runtime keygen --out .demo/keys
rm -rf .demo/repository .demo/fleet .demo/telemetry .demo/sync .demo/v2
.venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml \
  --key .demo/keys/signing.key --out .demo/repository/digits-cnn/1
.venv/bin/edge-runtime check .demo/repository/digits-cnn/1 --key .demo/keys/signing.pub

# The central fleet server (SQLite), a device enrolled on it, an operator token for its API.
mkdir -p .demo/fleet
FLEET_PORT=${EDGE_DEMO_FLEET_PORT:-8080}
TUF_PORT=${EDGE_DEMO_TUF_PORT:-8081}
cat > .demo/fleet/fleet.yaml <<YAML
database_url: sqlite:///fleet.sqlite
secret_file: secret.key
tuf: {repository_dir: tuf, keys_dir: tuf-keys, trusted_bundle_keys: [../keys/signing.pub]}
YAML
.venv/bin/edge-fleet migrate --config .demo/fleet/fleet.yaml
.venv/bin/edge-fleet tuf-init --root-keys-dir .demo/fleet/offline-root --config .demo/fleet/fleet.yaml
.venv/bin/edge-fleet enroll demo-device --device-class x86-cpu --config .demo/fleet/fleet.yaml > .demo/fleet/device-token
.venv/bin/edge-fleet operator-token create demo --config .demo/fleet/fleet.yaml > .demo/fleet/operator-token
.venv/bin/edge-fleet serve --config .demo/fleet/fleet.yaml --port "$FLEET_PORT" --workers 1 > .demo/fleet/serve.log 2>&1 &
fleet=$!
# TUF metadata and bundles are static files: any HTTP server or CDN serves them.
.venv/bin/python -m http.server --bind 127.0.0.1 --directory .demo/fleet/tuf "$TUF_PORT" > .demo/fleet/files.log 2>&1 &
files=$!

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
sync:
  metadata_url: http://127.0.0.1:${TUF_PORT}/metadata/
  targets_url: http://127.0.0.1:${TUF_PORT}/targets/
  metadata_dir: sync/tuf
  trusted_root: fleet/tuf/metadata/1.root.json
  staging_dir: sync/staging
  repository: repository
  trusted_keys: [keys/signing.pub]
  device_config: ../device_configs/x86-cpu.yaml
  runtime_url: http://127.0.0.1:${EDGE_DEMO_PORT:-8000}
  reserve_bytes: 0
  poll_s: 2
  grace_s: 5
YAML
.venv/bin/edge-runtime serve --repository .demo/repository --config .demo/runtime.yaml > .demo/server.log 2>&1 &
server=$!
.venv/bin/edge-runtime agent --config .demo/agent.yaml > .demo/agent.log 2>&1 &
agent=$!
trap 'kill -TERM $server $agent $fleet $files 2>/dev/null || true; wait $server $agent $fleet $files 2>/dev/null || true' EXIT
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:${EDGE_DEMO_PORT:-8000}/v2/health/ready" > /dev/null && break
  kill -0 $server 2>/dev/null || { cat .demo/server.log; exit 1; }
  sleep 0.2
done
.venv/bin/python scripts/demo_query.py --url "127.0.0.1:${EDGE_DEMO_PORT:-8000}" --model digits-cnn
sleep 3  # one more sample and upload after the traffic
.venv/bin/python scripts/demo_fleet.py --url "http://127.0.0.1:${FLEET_PORT}" --token-file .demo/fleet/operator-token \
  --device demo-device

# Over the air: version 2 published to the fleet server, rolled out to the device's class; the agent
# pulls it, the runtime stages, probes and promotes it (the health gate), v1 stays as the fallback.
.venv/bin/edge-export --model digits-cnn --config device_configs/x86-cpu.yaml --version 2 \
  --key .demo/keys/signing.key --out .demo/v2/digits-cnn > /dev/null
.venv/bin/edge-fleet publish .demo/v2/digits-cnn --config .demo/fleet/fleet.yaml
.venv/bin/edge-fleet rollout create digits-cnn 2 --device-class x86-cpu --percent 100 --config .demo/fleet/fleet.yaml
.venv/bin/python scripts/demo_ota.py --url "127.0.0.1:${EDGE_DEMO_PORT:-8000}" --model digits-cnn --version 2 \
  --agent-log .demo/agent.log
.venv/bin/edge-fleet rollout show 1 --config .demo/fleet/fleet.yaml
kill -TERM $server $agent $fleet $files
wait $server $agent $fleet $files || true
echo "server stopped: $(tail -n 1 .demo/server.log)"
trap - EXIT

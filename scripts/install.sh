#!/usr/bin/env bash
# Install the edge runtime as a service: onto a Jetson (JetPack/L4T) or a plain x86_64/aarch64 Linux.
#
#   scripts/install.sh --trusted-key keys/signing.pub [--device-config agx-xavier] [--token-file TOKEN] ...
#
# What it sets up (all under --root R, default /; --prefix P, default /opt/edge-runtime):
#   P/releases/<version>/venv   the package (wheel built from this checkout, or --wheel) in a venv;
#                               --system-site-packages on Jetson so JetPack's TensorRT bindings are seen
#   P/current                   symlink to the active release, switched atomically (new link + rename)
#   /etc/edge-runtime/          runtime.yaml, agent.yaml (written once, then yours), device.yaml,
#                               keys/*.pub (trusted bundle keys), device-token (0600, service user)
#   /var/lib/edge-runtime/      repository/, spool/, sync/, engines/ (0750, service user)
#   /etc/systemd/system/        edge-runtime.service, edge-fleet-agent.service (from systemd/*.service)
# and the system user and group edge-runtime. Units are enabled with systemctl only when the root is /
# and systemd runs; otherwise the commands to run are printed.
#
# Idempotent: a second identical run changes nothing and prints "no changes" (files are compared
# before writing; a release whose venv is intact and was installed from the same wheel is kept).
# Exit status: 0 ok, 1 error (one line on stderr), 2 usage.
#
# Options:
#   --root R               install into R instead of / (tests; an image being built). No systemd there.
#   --prefix P             where releases live (default /opt/edge-runtime)
#   --python PATH          Python >= 3.8 for the venv (default: /usr/bin/python3 of the root /, else python3
#                          on PATH). To use the Python *inside* another root, run this script inside it
#                          (chroot) with the default --root /.
#   --wheel FILE           install this wheel instead of building one from this checkout
#   --extras LIST          pip extras (default: server,sync,tensorrt on Jetson, cpu,server,sync elsewhere)
#   --pip-args "ARGS"      extra pip install arguments (e.g. "--no-index --find-links /media/wheels")
#   --device-config X      device config: a name under device_configs/ (agx-xavier, ...) or a file path
#                          (default: keep the installed one; on a first install off Jetson x86-cpu or
#                          aarch64-cpu by the machine)
#   --trusted-key FILE     public key that signs bundles, copied to /etc/edge-runtime/keys/ (repeatable)
#   --token-file FILE      the device token from `edge-fleet enroll`, installed as device-token (0600)
#   --server-url URL       the fleet server for agent.yaml (first install; default a placeholder)
#   --device-id ID         the device id for agent.yaml (first install; default the host name)
#   --owner UID:GID        owner for the service user's files instead of the edge-runtime user
#                          (a --root without /etc/passwd, or tests)
#   --dry-run              print each step, change nothing
#   --upgrade              install a new release beside the old one, switch, restart the runtime and wait
#                          up to --ready-timeout S (default 120) for READY=1; no READY: switch back, exit 1
#   --uninstall [--purge]  remove units and releases; --purge also /etc/edge-runtime, /var/lib/edge-runtime
#                          and the service user
#
# Readiness without systemd (--upgrade into a --root, or in a chroot): the script starts
# P/current/venv/bin/edge-runtime serve (--port 0) itself under scripts/lib/wait_ready.py, which listens on
# NOTIFY_SOCKET, and stops it once READY=1 came (as root on the machine itself it runs as the service user).
# EDGE_INSTALL_READY_COMMAND, when set, is run (bash -c) instead of that serve command, with
# EDGE_RUNTIME_RELEASE=<the release dir>: the tests' hook for a fake runtime that never gets ready. Unset,
# the real runtime is probed (it sends READY=1 once it serves: edge_runtime/systemd_notify.py).
set -euo pipefail
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CHECKOUT=$(dirname "$SCRIPT_DIR")
SERVICE=edge-runtime
UNITS=(edge-runtime edge-fleet-agent)
ETC=/etc/edge-runtime
STATE=/var/lib/edge-runtime
STATE_DIRS=(repository spool sync engines)

ROOT=/
PREFIX=/opt/edge-runtime
PY=""
WHEEL=""
EXTRAS=""
EXTRAS_SET=0
PIP_ARGS=""
DEVICE_CONFIG=""
TRUSTED_KEYS=()
TOKEN_FILE=""
SERVER_URL=""
DEVICE_ID=""
OWNER=""
DRY_RUN=0
UPGRADE=0
UNINSTALL=0
PURGE=0
READY_TIMEOUT=120

CHANGES=0
WORK=""
R=""              # the root as a path prefix: "" for /
OWNER_NOTE=""     # why files are not chowned to the service user, when they are not

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}

usage() {
  echo "install.sh: $*" >&2
  echo "usage: install.sh [--root R] [--prefix P] [--python PATH] [--wheel FILE] [--device-config X]" \
    "[--trusted-key FILE]... [--token-file FILE] [--dry-run] [--upgrade [--ready-timeout S]]" \
    "[--uninstall [--purge]] (see the header of scripts/install.sh)" >&2
  exit 2
}

cleanup() {
  if [ -n "$WORK" ]; then rm -rf "$WORK"; fi
}
trap cleanup EXIT

parse_args() {
  while [ $# -gt 0 ]; do
    local opt=$1
    case "$opt" in
      --dry-run) DRY_RUN=1 ;;
      --upgrade) UPGRADE=1 ;;
      --uninstall) UNINSTALL=1 ;;
      --purge) PURGE=1 ;;
      -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
      --root | --prefix | --python | --wheel | --extras | --pip-args | --device-config | --trusted-key | \
        --token-file | --server-url | --device-id | --owner | --ready-timeout)
        [ $# -ge 2 ] || usage "$opt needs a value"
        set_option "$opt" "$2"
        shift
        ;;
      *) usage "unknown argument: $opt" ;;
    esac
    shift
  done
  [ "$PURGE" = 0 ] || [ "$UNINSTALL" = 1 ] || usage "--purge goes with --uninstall"
  [ "$UNINSTALL" = 0 ] || [ "$UPGRADE" = 0 ] || usage "--uninstall and --upgrade exclude each other"
  case "$ROOT" in /*) ;; *) usage "--root must be an absolute path" ;; esac
  case "$PREFIX" in /?*) ;; *) usage "--prefix must be an absolute path other than /" ;; esac
  case "$PREFIX" in *..* | *//*) usage "--prefix must be a plain absolute path" ;; esac
  case "$READY_TIMEOUT" in '' | *[!0-9]*) usage "--ready-timeout takes whole seconds" ;; esac
  case "$OWNER" in '' | [0-9]*:[0-9]*) ;; *) usage "--owner takes UID:GID (numbers)" ;; esac
  PREFIX=${PREFIX%/}
  R=${ROOT%/}
}

set_option() {
  case "$1" in
    --root) ROOT=$2 ;;
    --prefix) PREFIX=$2 ;;
    --python) PY=$2 ;;
    --wheel) WHEEL=$2 ;;
    --extras) EXTRAS=$2; EXTRAS_SET=1 ;;
    --pip-args) PIP_ARGS=$2 ;;
    --device-config) DEVICE_CONFIG=$2 ;;
    --trusted-key) TRUSTED_KEYS+=("$2") ;;
    --token-file) TOKEN_FILE=$2 ;;
    --server-url) SERVER_URL=$2 ;;
    --device-id) DEVICE_ID=$2 ;;
    --owner) OWNER=$2 ;;
    --ready-timeout) READY_TIMEOUT=$2 ;;
  esac
}

# --- change tracking -----------------------------------------------------------------------------

# step DESCRIPTION: announce one change; true when it is to be made (false in a dry run)
step() {
  CHANGES=$((CHANGES + 1))
  if [ "$DRY_RUN" = 1 ]; then
    echo "would: $1"
    return 1
  fi
  echo "+ $1"
}

note() {
  echo "  $*"
}

# fix_mode_owner PATH MODE OWNER: chmod/chown PATH when they differ (OWNER "" leaves the owner alone)
fix_mode_owner() {
  local path=$1 mode=$2 owner=$3
  if [ "$(stat -c %a "$path")" != "$mode" ]; then
    if step "chmod $mode $path"; then chmod "$mode" "$path"; fi
  fi
  if [ -n "$owner" ] && [ "$(stat -c %u:%g "$path")" != "$owner" ]; then
    if step "chown $owner $path"; then chown "$owner" "$path"; fi
  fi
}

ensure_dir() {
  local path=$1 mode=$2 owner=${3:-}
  if [ -d "$path" ]; then
    fix_mode_owner "$path" "$mode" "$owner"
  elif step "create $path/ ($mode${owner:+ $owner})"; then
    mkdir -p "$path"
    chmod "$mode" "$path"
    if [ -n "$owner" ]; then chown "$owner" "$path"; fi
  fi
}

# install_file SRC DEST MODE [OWNER]: DEST gets SRC's content, MODE and OWNER; untouched when equal
install_file() {
  local src=$1 dest=$2 mode=$3 owner=${4:-}
  if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
    fix_mode_owner "$dest" "$mode" "$owner"
    return 0
  fi
  local verb=install
  if [ -e "$dest" ]; then verb=update; fi
  if step "$verb $dest ($mode${owner:+ $owner})"; then
    local tmp="$dest.install-tmp"
    (umask 077 && cp "$src" "$tmp")
    chmod "$mode" "$tmp"
    if [ -n "$owner" ]; then chown "$owner" "$tmp"; fi
    mv -f "$tmp" "$dest"
  fi
}

# install_once SRC DEST MODE: write DEST only when missing (a config file the operator owns afterwards)
install_once() {
  local src=$1 dest=$2 mode=$3
  if [ ! -e "$dest" ]; then
    install_file "$src" "$dest" "$mode"
  elif ! cmp -s "$src" "$dest"; then
    note "kept $dest (yours; this run would have written something else)"
  fi
}

# --- the machine ---------------------------------------------------------------------------------

is_jetson() {
  [ -f "$R/etc/nv_tegra_release" ] && return 0
  [ -d "$R/var/lib/dpkg" ] && command -v dpkg-query >/dev/null 2>&1 || return 1
  dpkg-query --admindir="$R/var/lib/dpkg" -W -f='${Status}' nvidia-l4t-core 2>/dev/null | grep -q 'ok installed'
}

systemd_real() {
  [ -z "$R" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

detect_platform() {
  local machine
  machine=$(uname -m)
  case "$machine" in x86_64 | aarch64) ;; *) die "unsupported machine $machine (x86_64 or aarch64)" ;; esac
  if is_jetson; then
    JETSON=1
    echo "platform: Jetson ($machine, L4T $(sed -n 's/^# \(R[0-9]*\).*REVISION: \([0-9.]*\).*/\1.\2/p' \
      "$R/etc/nv_tegra_release" 2>/dev/null || true))"
  else
    JETSON=0
    echo "platform: Linux $machine"
  fi
  if [ "$EXTRAS_SET" = 0 ]; then
    if [ "$JETSON" = 1 ]; then EXTRAS=server,sync,tensorrt; else EXTRAS=cpu,server,sync; fi
  fi
}

check_python() {
  if [ -z "$PY" ]; then
    if [ -z "$R" ] && [ -x /usr/bin/python3 ]; then PY=/usr/bin/python3; else PY=$(command -v python3 || true); fi
    [ -n "$PY" ] || die "no python3 found: install Python >= 3.8 or give --python PATH"
  fi
  "$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' 2>/dev/null ||
    die "$PY: Python >= 3.8 is needed (JetPack 5 ships 3.8)"
  "$PY" -c 'import venv, ensurepip' 2>/dev/null ||
    die "$PY cannot create a venv with pip (Debian/Ubuntu: apt-get install python3-venv)"
  PY=$("$PY" -c 'import sys; print(sys.executable)')
  PY_VERSION=$("$PY" -c 'import platform; print(platform.python_version())')
  echo "python: $PY ($PY_VERSION)"
  if [ -n "$R" ]; then
    note "the venv is made with $PY: it runs from this host (run this script inside the root to use its Python)"
  fi
  if [ "$JETSON" = 1 ]; then
    "$PY" -c 'import tensorrt' 2>/dev/null ||
      die "TensorRT's Python bindings do not import with $PY: install JetPack's python3-libnvinfer (nvidia-jetpack)"
  fi
  # pip builds pycuda (the tensorrt extra) from source when the system Python has none: it needs CUDA
  if [ "$JETSON" = 1 ] && [[ ",$EXTRAS," == *,tensorrt,* ]] && ! "$PY" -c 'import pycuda' 2>/dev/null &&
    [ ! -f "$R/usr/local/cuda/include/cuda.h" ]; then
    die "pycuda is missing and cannot be built: no CUDA headers in /usr/local/cuda/include (install JetPack's CUDA toolkit: apt-get install nvidia-jetpack)"
  fi
}

# service_owner: set OWNER (uid:gid) for the service user's files; create the user when we can
service_owner() {
  [ -z "$OWNER" ] || return 0
  if [ "$(id -u)" != 0 ]; then
    OWNER_NOTE="not running as root: the service user's files would be owned by $SERVICE:$SERVICE (left as they are)"
  elif [ ! -f "$R/etc/passwd" ]; then
    OWNER_NOTE="no $R/etc/passwd to add the user to: the service user's files would be owned by $SERVICE:$SERVICE"
  else
    if ! grep -q "^$SERVICE:" "$R/etc/passwd"; then
      if step "create system user and group $SERVICE (no shell, home $STATE)"; then
        local args=(--system --user-group --no-create-home --home-dir "$STATE" --shell /usr/sbin/nologin)
        if [ -n "$R" ]; then args+=(--root "$R"); fi
        local out
        out=$(useradd "${args[@]}" "$SERVICE" 2>&1) || die "useradd $SERVICE failed: $out"
      else
        OWNER_NOTE="(dry run: the user does not exist yet; files would be owned by $SERVICE:$SERVICE)"
        return 0
      fi
    fi
    OWNER=$(awk -F: -v u="$SERVICE" '$1 == u {print $3 ":" $4}' "$R/etc/passwd")
    [ -n "$OWNER" ] || die "cannot read the uid of $SERVICE from $R/etc/passwd"
  fi
  if [ -n "$OWNER_NOTE" ]; then note "$OWNER_NOTE"; fi
}

# --- the release ---------------------------------------------------------------------------------

build_wheel() {
  WORK=$(mktemp -d)
  if [ -n "$WHEEL" ]; then
    [ -f "$WHEEL" ] || die "--wheel $WHEEL: no such file"
    WHEEL=$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")
    return 0
  fi
  # a clean copy of the sources: an in-tree build would package stale files left in build/
  mkdir "$WORK/src" "$WORK/dist"
  tar -C "$CHECKOUT" --exclude=__pycache__ --exclude='*.egg-info' -cf - pyproject.toml README.md \
    edge_runtime export fleet_server | tar -C "$WORK/src" -xf -
  echo "building the wheel from $CHECKOUT"
  if ! "$PY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation -w "$WORK/dist" \
      "$WORK/src" >"$WORK/build.log" 2>&1 &&
    ! "$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w "$WORK/dist" "$WORK/src" \
      >>"$WORK/build.log" 2>&1; then
    die "building the wheel failed (pip wheel; its last line: $(tail -n 1 "$WORK/build.log"))"
  fi
  WHEEL=$(ls "$WORK"/dist/edge_runtime-*.whl)
}

# wheel_facts: VERSION and WHEEL_HASH (sha256 of the wheel's RECORD: its files' hashes, not zip dates)
wheel_facts() {
  local facts
  facts=$("$PY" - "$WHEEL" <<'EOF'
import hashlib, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as wheel:
    names = wheel.namelist()
    meta = wheel.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    record = wheel.read(next(n for n in names if n.endswith(".dist-info/RECORD")))
fields = dict(line.split(": ", 1) for line in meta.splitlines() if ": " in line and not line[0].isspace())
print(fields.get("Name", ""), fields.get("Version", ""), hashlib.sha256(record).hexdigest())
EOF
) || die "$WHEEL: not a readable wheel"
  local name
  read -r name VERSION WHEEL_HASH <<<"$facts"
  [ "$name" = edge-runtime ] || [ "$name" = edge_runtime ] || die "$WHEEL is not an edge-runtime wheel ($name)"
  [[ "$VERSION" =~ ^[A-Za-z0-9][A-Za-z0-9.+_-]*$ ]] || die "$WHEEL: unexpected version '$VERSION'"
  echo "release: $VERSION (wheel $(basename "$WHEEL"))"
}

install_release() {
  local rel="$R$PREFIX/releases/$VERSION"
  local stamp_want
  stamp_want=$(printf 'wheel-record-sha256 %s\nextras %s\npip-args %s\npython %s\nsystem-site-packages %s\n' \
    "$WHEEL_HASH" "$EXTRAS" "$PIP_ARGS" "$PY_VERSION" "$JETSON")
  ensure_dir "$R$PREFIX" 755
  ensure_dir "$R$PREFIX/releases" 755
  if [ "$(cat "$rel/install-stamp" 2>/dev/null)" = "$stamp_want" ] && [ -x "$rel/venv/bin/edge-runtime" ] &&
    "$rel/venv/bin/python" -c 'import edge_runtime' 2>/dev/null; then
    return 0
  fi
  step "install release $VERSION into $rel/venv (extras: ${EXTRAS:-none})" || return 0
  rm -rf "$rel"
  mkdir -p "$rel"
  local venv_args=()
  if [ "$JETSON" = 1 ]; then venv_args+=(--system-site-packages); fi
  "$PY" -m venv "${venv_args[@]}" "$rel/venv" || die "creating the venv $rel/venv failed"
  local pip_args=()
  read -r -a pip_args <<<"$PIP_ARGS"
  local spec=$WHEEL
  if [ -n "$EXTRAS" ]; then spec="${WHEEL}[$EXTRAS]"; fi
  if [ "$JETSON" = 1 ] && ! "$rel/venv/bin/python" -c 'import pycuda' 2>/dev/null; then
    note "building pycuda from source with /usr/local/cuda (minutes on a Jetson)"
  fi
  if ! PATH="/usr/local/cuda/bin:$PATH" "$rel/venv/bin/python" -m pip install -q --disable-pip-version-check \
      "${pip_args[@]}" "$spec" >"$rel/pip-install.log" 2>&1; then
    die "pip install of $spec failed (log: $rel/pip-install.log): $(grep -m1 -i error "$rel/pip-install.log" || tail -n 1 "$rel/pip-install.log")"
  fi
  printf '%s\n' "$stamp_want" >"$rel/install-stamp"
}

# switch_current VERSION: P/current -> releases/VERSION (relative, so it also holds inside the root)
switch_current() {
  local target="releases/$1" link="$R$PREFIX/current"
  if [ "$(readlink "$link" 2>/dev/null || true)" = "$target" ]; then return 0; fi
  if step "switch $link -> $target"; then
    ln -sfn "$target" "$link.new"
    mv -T "$link.new" "$link"
  fi
}

# --- configuration -------------------------------------------------------------------------------

device_config_source() {
  if [ -z "$DEVICE_CONFIG" ]; then
    if [ -f "$R$ETC/device.yaml" ]; then return 0; fi
    if [ "$JETSON" = 1 ]; then
      die "give --device-config (a file, or a name: $(find "$CHECKOUT/device_configs" -maxdepth 1 -name '*.yaml' -printf '%f ' | sed 's/\.yaml//g'))"
    fi
    DEVICE_CONFIG=x86-cpu
    if [ "$(uname -m)" = aarch64 ] && [ -f "$CHECKOUT/device_configs/aarch64-cpu.yaml" ]; then DEVICE_CONFIG=aarch64-cpu; fi
  fi
  if [ -f "$DEVICE_CONFIG" ]; then
    echo "$DEVICE_CONFIG"
  elif [ -f "$CHECKOUT/device_configs/$DEVICE_CONFIG.yaml" ]; then
    echo "$CHECKOUT/device_configs/$DEVICE_CONFIG.yaml"
  else
    die "--device-config $DEVICE_CONFIG: neither a file nor a name under device_configs/"
  fi
}

write_runtime_yaml() {
  local keys=() key
  for key in "$R$ETC"/keys/*.pub "${TRUSTED_KEYS[@]}"; do
    [ -f "$key" ] || continue
    keys+=("keys/$(basename "$key")")
  done
  [ ${#keys[@]} -gt 0 ] || die "no trusted key: give --trusted-key PUB (the public key that signs your bundles)"
  local list
  list=$(printf '%s\n' "${keys[@]}" | sort -u | paste -sd, - | sed 's/,/, /g')
  cat >"$1" <<EOF
# Runtime settings (edge-runtime serve --config). Written by scripts/install.sh on the first install,
# yours afterwards (later runs keep it). Relative paths are relative to this directory ($ETC),
# so the file reads the same inside an install root: ../../var/lib/edge-runtime is $STATE.
# Every other setting and its default: device_configs/runtime/example.yaml in the source.
device_config: device.yaml
trusted_keys: [$list]
host: 127.0.0.1
port: 8000
engine_cache_dir: ../..$STATE/engines
telemetry:
  spool_path: ../..$STATE/spool/telemetry.sqlite
EOF
}

write_agent_yaml() {
  local device_id=${DEVICE_ID:-$(hostname 2>/dev/null || echo device)}
  cat >"$1" <<EOF
# edge-runtime agent settings (edge-runtime agent --config). Written by scripts/install.sh on the first
# install, yours afterwards. Relative paths are relative to this directory ($ETC).
server_url: ${SERVER_URL:-https://fleet.example.com}
device_id: $device_id
token_file: device-token
ca_bundle: null                      # null: the system's CAs
spool_path: ../..$STATE/spool/telemetry.sqlite
# Fleet sync (docs/fleet.md): uncomment with your server's URLs.
# sync:
#   metadata_url: https://fleet.example.com/tuf/metadata/
#   targets_url: https://fleet.example.com/tuf/targets/
#   metadata_dir: ../..$STATE/sync/metadata
#   trusted_root: root.json
#   staging_dir: ../..$STATE/sync/downloads
#   repository: ../..$STATE/repository
#   trusted_keys: [keys/signing.pub]
#   device_config: device.yaml
EOF
}

install_config() {
  ensure_dir "$R/etc" 755
  ensure_dir "$R$ETC" 755
  ensure_dir "$R$ETC/keys" 755
  local key
  for key in "${TRUSTED_KEYS[@]}"; do
    [ -f "$key" ] || die "--trusted-key $key: no such file"
    install_file "$key" "$R$ETC/keys/$(basename "$key")" 644
  done
  local device
  device=$(device_config_source)
  if [ -n "$device" ]; then install_file "$device" "$R$ETC/device.yaml" 644; fi
  if [ -n "$TOKEN_FILE" ]; then
    [ -f "$TOKEN_FILE" ] || die "--token-file $TOKEN_FILE: no such file"
    install_file "$TOKEN_FILE" "$R$ETC/device-token" 600 "$OWNER"
  elif [ -f "$R$ETC/device-token" ]; then
    fix_mode_owner "$R$ETC/device-token" 600 "$OWNER"
  fi
  write_runtime_yaml "$WORK/runtime.yaml"
  install_once "$WORK/runtime.yaml" "$R$ETC/runtime.yaml" 644
  write_agent_yaml "$WORK/agent.yaml"
  install_once "$WORK/agent.yaml" "$R$ETC/agent.yaml" 644
}

install_state_dirs() {
  ensure_dir "$R/var" 755
  ensure_dir "$R/var/lib" 755
  ensure_dir "$R$STATE" 750 "$OWNER"
  local dir
  for dir in "${STATE_DIRS[@]}"; do
    ensure_dir "$R$STATE/$dir" 750 "$OWNER"
  done
}

# memory_max: MemoryMax= from the device config's memory_budget_mb (infinity without one)
memory_max() {
  local mb=""
  if [ -f "$R$ETC/device.yaml" ]; then
    mb=$(sed -n 's/^memory_budget_mb:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$R$ETC/device.yaml")
  elif [ -n "$DEVICE_CONFIG" ]; then  # a dry run before the first install
    mb=$(sed -n 's/^memory_budget_mb:[[:space:]]*\([0-9][0-9]*\).*/\1/p' "$(device_config_source)")
  fi
  if [ -n "$mb" ]; then echo "${mb}M"; else echo infinity; fi
}

install_units() {
  local mem unit units_changed=$CHANGES
  mem=$(memory_max)
  ensure_dir "$R/etc/systemd" 755
  ensure_dir "$R/etc/systemd/system" 755
  for unit in "${UNITS[@]}"; do
    local template="$CHECKOUT/systemd/$unit.service"
    [ -f "$template" ] || die "$template is missing"
    "$PY" "$SCRIPT_DIR/lib/render_unit.py" "$template" "$WORK/$unit.service" --prefix "$PREFIX" \
      --memory-max "$mem" || die "rendering $template failed"
    install_file "$WORK/$unit.service" "$R/etc/systemd/system/$unit.service" 644
  done
  if ! systemd_real; then
    return 0
  fi
  if [ "$CHANGES" != "$units_changed" ]; then
    if step "systemctl daemon-reload"; then systemctl daemon-reload; fi
  fi
  for unit in "${UNITS[@]}"; do
    if ! systemctl is-enabled -q "$unit" 2>/dev/null; then
      if step "systemctl enable --now $unit"; then systemctl enable --now "$unit"; fi
    fi
  done
}

# restart_switched OLD: a plain install that switched releases restarts running services (no READY wait:
# --upgrade does that, with the switch back)
restart_switched() {
  if ! systemd_real || [ "$1" = "$(readlink "$R$PREFIX/current" 2>/dev/null || true)" ]; then return 0; fi
  if step "systemctl try-restart ${UNITS[*]}"; then systemctl try-restart "${UNITS[@]}"; fi
}

print_enable_lines() {
  systemd_real && return 0
  echo "systemd is not managing this root: to start the services on the machine, run"
  local unit
  for unit in "${UNITS[@]}"; do echo "  systemctl enable --now $unit"; done
}

# --- upgrade: restart and wait for READY=1 -------------------------------------------------------

# runtime_ready: start the current release and wait for its READY=1 (systemd when real, else wait_ready.py)
runtime_ready() {
  if systemd_real; then
    timeout "$READY_TIMEOUT" systemctl restart edge-runtime ||
      { echo "systemctl restart edge-runtime failed or took over ${READY_TIMEOUT}s"; return 1; }
    systemctl is-active -q edge-runtime || { echo "edge-runtime is not active after its restart"; return 1; }
    return 0
  fi
  local release
  release=$(cd "$R$PREFIX/current" && pwd -P)
  local command=("$R$PREFIX/current/venv/bin/edge-runtime" serve --config "$R$ETC/runtime.yaml"
    --repository "$R$STATE/repository" --port 0)
  if [ -n "${EDGE_INSTALL_READY_COMMAND:-}" ]; then command=(bash -c "$EDGE_INSTALL_READY_COMMAND"); fi
  # On the machine itself (a chroot, or systemd not running) the probe runs as the service user, so what it
  # creates in the state directories belongs to that user; in a --root it runs as whoever runs this script.
  local as_user=()
  if [ -z "$R" ] && [ "$(id -u)" = 0 ] && [ -n "$OWNER" ]; then as_user=(--user "$OWNER"); fi
  EDGE_RUNTIME_RELEASE=$release "$PY" "$SCRIPT_DIR/lib/wait_ready.py" --timeout "$READY_TIMEOUT" \
    --log "$WORK/ready.log" "${as_user[@]}" -- "${command[@]}"
}

upgrade_and_wait() {
  local old=$1
  if [ "$CHANGES" = 0 ]; then return 0; fi  # nothing new to start
  if [ "$DRY_RUN" = 1 ]; then
    echo "would: restart edge-runtime on release $VERSION and wait up to ${READY_TIMEOUT}s for READY=1"
    return 0
  fi
  echo "+ restart edge-runtime on release $VERSION; waiting up to ${READY_TIMEOUT}s for READY=1"
  local problem
  if problem=$(runtime_ready 2>&1); then
    echo "release $VERSION is ready"
    if systemd_real; then systemctl try-restart edge-fleet-agent; fi
    return 0
  fi
  problem=$(printf '%s' "${problem#wait_ready: }" | tr '\n' ' ')
  if [ -z "$old" ] || [ "$old" = "releases/$VERSION" ]; then
    die "release $VERSION did not report READY (${problem% }); no previous release to switch back to"
  fi
  switch_current "${old#releases/}" >/dev/null
  if systemd_real; then systemctl restart edge-runtime >/dev/null 2>&1 || true; fi
  die "release $VERSION did not report READY (${problem% }); switched back to ${old#releases/}"
}

# --- uninstall -----------------------------------------------------------------------------------

remove_path() {
  local path=$1
  if [ -e "$path" ] || [ -L "$path" ]; then
    if step "remove $path"; then rm -rf "$path"; fi
  fi
}

uninstall() {
  local unit
  for unit in "${UNITS[@]}"; do
    if systemd_real && [ -f "/etc/systemd/system/$unit.service" ]; then
      if step "systemctl disable --now $unit"; then systemctl disable --now "$unit" || true; fi
    fi
    remove_path "$R/etc/systemd/system/$unit.service"
  done
  if systemd_real && [ "$CHANGES" != 0 ]; then
    if step "systemctl daemon-reload"; then systemctl daemon-reload; fi
  fi
  remove_path "$R$PREFIX/current"
  remove_path "$R$PREFIX/releases"
  if [ -d "$R$PREFIX" ] && [ -z "$(ls -A "$R$PREFIX")" ]; then remove_path "$R$PREFIX"; fi
  if [ "$PURGE" = 1 ]; then
    remove_path "$R$ETC"
    remove_path "$R$STATE"
    if [ "$(id -u)" = 0 ] && [ -f "$R/etc/passwd" ] && grep -q "^$SERVICE:" "$R/etc/passwd"; then
      local args=()
      if [ -n "$R" ]; then args+=(--root "$R"); fi
      if step "remove system user $SERVICE"; then userdel "${args[@]}" "$SERVICE" >/dev/null 2>&1 || true; fi
    fi
  else
    note "kept $ETC and $STATE (configuration and data; --purge removes them)"
  fi
}

# --- main ----------------------------------------------------------------------------------------

main() {
  parse_args "$@"
  if [ "$DRY_RUN" = 1 ]; then echo "dry run: nothing is changed"; fi
  if [ "$UNINSTALL" = 1 ]; then
    uninstall
  else
    detect_platform
    check_python
    build_wheel
    wheel_facts
    service_owner
    install_config
    install_state_dirs
    local old
    old=$(readlink "$R$PREFIX/current" 2>/dev/null || true)
    install_release
    switch_current "$VERSION"
    install_units
    if [ "$UPGRADE" = 1 ]; then upgrade_and_wait "$old"; else restart_switched "$old"; fi
    print_enable_lines
  fi
  if [ "$CHANGES" = 0 ]; then
    echo "no changes"
  elif [ "$DRY_RUN" = 1 ]; then
    echo "dry run: $CHANGES change(s) would be made"
  else
    echo "done: $CHANGES change(s)"
  fi
}

main "$@"

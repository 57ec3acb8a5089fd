#!/usr/bin/env bash
# A throwaway nginx on 127.0.0.1 serving one directory as static files, for tests and benchmarks (never for
# production): the TUF metadata and bundle tars a fleet publishes are static files any HTTP server can serve.
#   scripts/lib/nginx.sh start DIR ROOT PORT [RATE]   start (or find running) an nginx whose state lives in DIR,
#                                                     serving ROOT on 127.0.0.1:PORT; print its URL
#   scripts/lib/nginx.sh stop  DIR                    stop it (idempotent); DIR is kept (rm -rf it yourself)
#   scripts/lib/nginx.sh url   DIR                    print the URL of the one started in DIR
# Or source it and call nginx_start / nginx_stop / nginx_url.
# Everything nginx writes stays in DIR: nginx.conf, nginx.pid, error.log, access.log and temp/. The access
# log records the Range header and the status of every request:
#   127.0.0.1 "GET /targets/x.tar HTTP/1.1" 206 1234 range="bytes=4096-"
# RATE (nginx's limit_rate, e.g. 8k; default 0 = unlimited) throttles every answer under /targets/, so that a
# test can cut a bundle download half-way. As root (CI) the workers run as an unprivileged user
# ($EDGE_NGINX_USER, else www-data, else nobody): ROOT and its parents must be readable by it.
# Installs Debian's `nginx-light` when nginx is absent (ensure_debian_packages: as root, or with sudo).

# shellcheck source=scripts/lib/system_packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/system_packages.sh"

_nginx_bin() {
  local candidate
  for candidate in "$(command -v nginx 2>/dev/null)" /usr/sbin/nginx; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then
      echo "$candidate"
      return 0
    fi
  done
  return 1
}

_nginx_ensure_installed() {
  _nginx_bin >/dev/null && return 0
  ensure_debian_packages nginx-light || true
  _nginx_bin >/dev/null && return 0
  echo "nginx.sh: nginx is not installed and could not be (apt-get install nginx-light, as root)" >&2
  return 1
}

_nginx_worker_user() {
  local name
  for name in "${EDGE_NGINX_USER:-}" www-data nobody; do
    if [ -n "$name" ] && id "$name" >/dev/null 2>&1; then
      echo "$name"
      return 0
    fi
  done
  return 1
}

# _nginx_temp_paths BIN DIR: a *_temp_path line for each temp path this build has (all under DIR/temp), so
# that nothing is written outside DIR (Debian's defaults are under /var/lib/nginx, not writable unless root)
_nginx_temp_paths() {
  local bin=$1 dir=$2 built module
  built=$("$bin" -V 2>&1)
  echo "    client_body_temp_path $dir/temp/client_body;"
  for module in proxy fastcgi uwsgi scgi; do
    case "$built" in
      *"--without-http_${module}_module"*) ;;
      *) echo "    ${module}_temp_path $dir/temp/$module;" ;;
    esac
  done
}

# _nginx_write_conf BIN DIR ROOT PORT RATE
_nginx_write_conf() {
  local bin=$1 dir=$2 root=$3 port=$4 rate=$5 user_line=""
  if [ "$(id -u)" -eq 0 ]; then
    user_line="user $(_nginx_worker_user) $(id -gn "$(_nginx_worker_user)");"
  fi
  cat >"$dir/nginx.conf" <<EOF
# written by scripts/lib/nginx.sh: serves $root on 127.0.0.1:$port
$user_line
daemon on;
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections 128;
}
http {
    types {
        application/json json;
        application/x-tar tar;
    }
    default_type application/octet-stream;
    log_format ranges '\$remote_addr "\$request" \$status \$body_bytes_sent range="\$http_range"';
    access_log $dir/access.log ranges;
    sendfile on;
    server_tokens off;
$(_nginx_temp_paths "$bin" "$dir")
    server {
        listen 127.0.0.1:$port;
        root $root;
        autoindex off;
        location /targets/ {
            limit_rate $rate;
        }
    }
}
EOF
}

_nginx_running() {
  local dir=$1 pid
  [ -f "$dir/nginx.pid" ] || return 1
  pid=$(cat "$dir/nginx.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

nginx_url() {
  local dir=${1:?nginx.sh: url needs DIR}
  [ -f "$dir/url" ] || { echo "nginx.sh: no nginx was started in $dir" >&2; return 1; }
  cat "$dir/url"
}

nginx_start() {
  local dir=${1:?nginx.sh: start needs DIR} root=${2:?nginx.sh: start needs ROOT} port=${3:?nginx.sh: start needs PORT}
  local rate=${4:-0} bin
  _nginx_ensure_installed || return 1
  bin=$(_nginx_bin)
  if [ "$(id -u)" -eq 0 ] && ! _nginx_worker_user >/dev/null; then
    echo "nginx.sh: no unprivileged user to run the workers as (www-data, nobody)" >&2
    return 1
  fi
  mkdir -p "$dir/temp"
  dir=$(cd "$dir" && pwd)
  root=$(cd "$root" && pwd) || { echo "nginx.sh: $2 is not a directory" >&2; return 1; }
  if _nginx_running "$dir"; then
    nginx_url "$dir"
    return 0
  fi
  _nginx_write_conf "$bin" "$dir" "$root" "$port" "$rate"
  # -e: the error log from the very start (before the config is read), so nothing goes to /var/log/nginx.
  # SC2094: -e only names the log to nginx, and both nginx and the redirection append; nothing reads it here.
  # shellcheck disable=SC2094
  if ! "$bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>>"$dir/error.log"; then
    tail -n 20 "$dir/error.log" >&2
    return 1
  fi
  local tries=0
  until _nginx_running "$dir"; do
    tries=$((tries + 1))
    if [ "$tries" -gt 100 ]; then
      echo "nginx.sh: nginx did not write its pid file" >&2
      tail -n 20 "$dir/error.log" >&2
      return 1
    fi
    sleep 0.05
  done
  echo "http://127.0.0.1:$port" >"$dir/url"
  nginx_url "$dir"
}

nginx_stop() {
  local dir=${1:?nginx.sh: stop needs DIR} pid tries=0
  _nginx_running "$dir" || return 0
  pid=$(cat "$dir/nginx.pid")
  kill -TERM "$pid" 2>/dev/null || return 0  # fast shutdown: throttled downloads in flight are cut, not awaited
  while kill -0 "$pid" 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 200 ]; then  # 10 s
      echo "nginx.sh: nginx (pid $pid) did not stop on SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.05
  done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start) nginx_start "${2:-}" "${3:-}" "${4:-}" "${5:-}" ;;
    stop) nginx_stop "${2:-}" ;;
    url) nginx_url "${2:-}" ;;
    *) echo "usage: $0 start DIR ROOT PORT [RATE] | stop DIR | url DIR" >&2; exit 2 ;;
  esac
fi

#!/usr/bin/env bash
# A throwaway PostgreSQL on 127.0.0.1 for tests and benchmarks (never for production).
#   scripts/lib/postgres.sh start [DIR] [PORT]   start (or find running) a cluster in DIR; print its URL
#   scripts/lib/postgres.sh stop  [DIR]          stop it (idempotent); DIR is kept (rm -rf it yourself)
#   scripts/lib/postgres.sh url   [DIR] [PORT]   print the URL only
# Or source it and call postgres_start / postgres_stop / postgres_url.
# DIR defaults to $EDGE_PG_DIR or /tmp/edge-fleet-postgres, PORT to $EDGE_PG_PORT or 55432. Trust
# authentication, listening on 127.0.0.1 only, sockets inside DIR. PostgreSQL refuses to run as
# root, so as root (CI) the cluster belongs to the `postgres` system user (created by Debian's
# package) and runs through runuser. Installs Debian's `postgresql` when absent (ensure_debian_packages).
# The URL is postgresql+psycopg://fleet@127.0.0.1:PORT/postgres (create databases in it as needed).

# shellcheck source=scripts/lib/system_packages.sh
source "$(dirname "${BASH_SOURCE[0]}")/system_packages.sh"

_pg_bin() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    if [ -x "$dir/initdb" ]; then
      echo "$dir"
      return 0
    fi
  done
  return 1
}

_pg_ensure_installed() {
  _pg_bin >/dev/null && return 0
  ensure_debian_packages postgresql || true
  _pg_bin >/dev/null && return 0
  echo "postgres.sh: PostgreSQL is not installed and could not be (apt-get install postgresql, as root)" >&2
  return 1
}

# _pg_run CMD...: run as the cluster's owner (postgres when we are root)
_pg_run() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

postgres_url() {
  local port=${2:-${EDGE_PG_PORT:-55432}}
  echo "postgresql+psycopg://fleet@127.0.0.1:${port}/postgres"
}

postgres_start() {
  local dir=${1:-${EDGE_PG_DIR:-/tmp/edge-fleet-postgres}} port=${2:-${EDGE_PG_PORT:-55432}} bin
  _pg_ensure_installed || return 1
  bin=$(_pg_bin)
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /usr/sbin/nologin postgres
  fi
  mkdir -p "$dir"
  [ "$(id -u)" -eq 0 ] && chown postgres: "$dir"
  chmod 700 "$dir"
  if ! _pg_run test -w "$dir"; then
    echo "postgres.sh: $dir is not reachable by the postgres user (a parent directory is private?)" >&2
    return 1
  fi
  if [ ! -f "$dir/data/PG_VERSION" ]; then
    _pg_run "$bin/initdb" -D "$dir/data" -U fleet --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 ||
      { cat "$dir/initdb.log" >&2; return 1; }
  fi
  if ! _pg_run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    _pg_run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
      -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=${EDGE_PG_FSYNC:-off} -c max_connections=200" start >/dev/null ||
      { tail -20 "$dir/server.log" >&2; return 1; }
  fi
  postgres_url "$dir" "$port"
}

postgres_stop() {
  local dir=${1:-${EDGE_PG_DIR:-/tmp/edge-fleet-postgres}} bin
  bin=$(_pg_bin) || return 0
  [ -f "$dir/data/PG_VERSION" ] || return 0
  if _pg_run "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
    _pg_run "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  case "${1:-}" in
    start) postgres_start "${2:-}" "${3:-}" ;;
    stop) postgres_stop "${2:-}" ;;
    url) postgres_url "${2:-}" "${3:-}" ;;
    *) echo "usage: $0 start|stop|url [DIR] [PORT]" >&2; exit 2 ;;
  esac
fi

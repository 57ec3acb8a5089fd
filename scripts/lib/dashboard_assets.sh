# shellcheck shell=bash
# ensure_dashboard_assets: install the fleet dashboard's browser libraries (uPlot, pinned in
# fleet_server/dashboard_assets/package-lock.json) with `npm ci` when node_modules is missing or
# older than the lockfile. The fleet server serves them itself: the dashboard needs no CDN.
ensure_dashboard_assets() {
  local dir=fleet_server/dashboard_assets
  if [ -f "$dir/node_modules/.package-lock.json" ] && [ "$dir/node_modules/.package-lock.json" -nt "$dir/package-lock.json" ]; then
    return 0
  fi
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm not found: the fleet dashboard's assets need it (Debian: apt-get install -y npm)" >&2
    return 1
  fi
  echo "== installing dashboard assets into $dir/node_modules (npm ci)"
  local log
  if ! log=$(npm ci --prefix "$dir" --no-audit --no-fund 2>&1); then
    printf '%s\n' "$log" >&2
    echo "npm ci failed in $dir" >&2
    return 1
  fi
}

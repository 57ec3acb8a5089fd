# shellcheck shell=bash
# ensure_debian_packages PKG... : install Debian packages the tests need (PostgreSQL, Chromium) when
# they are missing. CI runs on a fresh machine as root; elsewhere sudo is used if it is there. When
# nothing can be installed, say so: the tests that need the package then skip with the reason —
# except under CI (EDGE_CI=1, set by .ci/run), where a package that cannot be installed fails the run.
ensure_debian_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  local run=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then run=(sudo -n); else
      echo "== cannot install ${missing[*]} (not root, no sudo): their tests will skip" >&2
      [ "${EDGE_CI:-0}" = 1 ] && return 1
      return 0
    fi
  fi
  echo "== installing Debian packages: ${missing[*]}"
  if ! { "${run[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${run[@]}" apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } > /tmp/edge-apt.log 2>&1; then
    tail -n 20 /tmp/edge-apt.log >&2
    echo "== apt-get failed for ${missing[*]} (log: /tmp/edge-apt.log): their tests will skip" >&2
    [ "${EDGE_CI:-0}" = 1 ] && return 1
  fi
  return 0
}

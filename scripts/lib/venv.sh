# shellcheck shell=bash
# ensure_venv DIR PYTHON SPEC... : create DIR with PYTHON if missing and pip-install SPEC with the
# project's constraints. Re-installs only when pyproject.toml, constraints.txt or SPEC changed
# (a stamp file in DIR remembers), so the README's commands stay fast when run again.
ensure_venv() {
  local dir=$1 python=$2
  shift 2
  local stamp_want
  stamp_want=$(cat pyproject.toml constraints.txt <(printf '%s\n' "$@") | sha256sum | cut -d' ' -f1)
  if [ ! -x "$dir/bin/python" ]; then
    echo "== creating $dir with $python"
    "$python" -m venv "$dir"
  fi
  if [ "$(cat "$dir/.edge-stamp" 2>/dev/null)" != "$stamp_want" ]; then
    echo "== installing into $dir: $*"
    # pip's own chatter (setuptools build warnings) goes to a log, shown only when it fails
    if ! "$dir/bin/python" -m pip install -q --disable-pip-version-check -c constraints.txt "$@" \
        > "$dir/pip-install.log" 2>&1; then
      cat "$dir/pip-install.log" >&2
      echo "pip install failed (log: $dir/pip-install.log)" >&2
      return 1
    fi
    echo "$stamp_want" > "$dir/.edge-stamp"
  fi
}

# find_python38: print a Python 3.8 interpreter (JetPack 5's Python) or fail.
find_python38() {
  local candidate
  for candidate in python3.8 "$(pyenv root 2>/dev/null)/versions/"3.8*/bin/python3.8; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 8))' 2>/dev/null; then
      echo "$candidate"
      return 0
    fi
  done
  echo "python3.8 not found: the runtime's tests must also run on JetPack 5's Python" >&2
  return 1
}

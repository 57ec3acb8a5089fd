#!/usr/bin/env bash
# shellcheck shell=bash
# arm64_root: an arm64 (aarch64, the Jetson's architecture) Debian bookworm root on an x86 machine, run
# through qemu-user-static and binfmt_misc, so the install script and the installed runtime are tried
# on aarch64 Python, numpy and ONNX Runtime wheels (issue 19, item 3). Source it, or run it directly:
#
#   arm64_root ensure [DIR]    create DIR (or reuse it when complete) and print its path
#   arm64_root run DIR CMD...  run CMD inside DIR (chroot), as root, with a minimal environment
#
# DIR defaults to $EDGE_ARM64_ROOT, else /var/cache/edge-runtime-arm64-root: building the root takes
# minutes (debootstrap's second stage runs under emulation), so it lives in the machine's cache, outside
# any checkout, and every run and every clone on the same machine reuses it. It is built in DIR.building,
# marked complete and renamed: an interrupted build leaves only DIR.building, removed by the next one.
# DIR.lock serialises builds, and callers that change the root (the arm64 install test) hold it too.
#
# Needs root (debootstrap, chroot and mounts do); as root it installs debootstrap, qemu-user-static and
# binfmt-support from Debian's packages when missing, mounts binfmt_misc when it is not mounted (a
# container's /proc/sys/fs/binfmt_misc often is not), and registers the qemu-aarch64 handler with
# update-binfmts. Debian's handler has the F (fix-binary) flag: the kernel opens the emulator when
# the handler is registered, so no qemu binary is copied into the root.
#
# `run` never mounts /sys: ONNX Runtime's cpuinfo then reads the x86 host's sysfs and segfaults under
# qemu (without it ORT only warns). Each `run` has its own mount namespace (unshare): /proc and /dev
# are mounted there only and vanish when the command ends, however it ends; nothing is left to unmount.
# Run as a script, `run` execs down to the command (unshare, sh, chroot, env): the script's process is
# the command, so its signals (SIGTERM: the runtime drains) reach it. No PID namespace on purpose: its
# init (unshare --fork) ignores SIGTERM. The network namespace is the host's: a server started inside
# on 127.0.0.1 is reached from the host. The host's resolv.conf and CA bundle are copied in.

ARM64_ROOT_DEFAULT=/var/cache/edge-runtime-arm64-root
ARM64_ROOT_MARKER=.edge-arm64-root-complete
ARM64_ROOT_SUITE=bookworm
ARM64_ROOT_MIRROR=${EDGE_ARM64_MIRROR:-http://deb.debian.org/debian}
# python3-venv and -pip: the install script's venv; ca-certificates: pip over HTTPS; passwd (useradd)
# and adduser: the install script's service user.
ARM64_ROOT_INCLUDE=python3,python3-venv,python3-pip,ca-certificates,passwd,adduser

arm64_root() {
  local action=${1:-}
  shift || true
  case "$action" in
    ensure) arm64_root_ensure "$@" ;;
    run) arm64_root_run "$@" ;;
    *)
      echo "usage: arm64_root ensure [DIR] | arm64_root run DIR CMD..." >&2
      return 2
      ;;
  esac
}

arm64_root_die() {
  echo "arm64_root: $*" >&2
  return 1
}

# arm64_root_ensure [DIR]: print DIR once it is a complete arm64 root that runs aarch64 binaries.
arm64_root_ensure() {
  local dir=${1:-${EDGE_ARM64_ROOT:-$ARM64_ROOT_DEFAULT}}
  [ "$(id -u)" -eq 0 ] || { arm64_root_die "needs root (debootstrap, chroot, mounts)"; return 1; }
  arm64_root_tools || return 1
  arm64_root_binfmt || return 1
  if [ ! -f "$dir/$ARM64_ROOT_MARKER" ]; then
    # one build at a time per DIR: a second caller waits, then finds the marker
    mkdir -p "$(dirname "$dir")" || return 1
    (
      flock 9 || exit 1
      [ -f "$dir/$ARM64_ROOT_MARKER" ] || arm64_root_build "$dir"
    ) 9>"$dir.lock" || return 1
  fi
  local machine
  machine=$(arm64_root_run "$dir" uname -m) || { arm64_root_die "cannot run a command in $dir"; return 1; }
  [ "$machine" = aarch64 ] || { arm64_root_die "$dir runs as '$machine', not aarch64"; return 1; }
  echo "$dir"
}

# arm64_root_tools: debootstrap, qemu-user-static, binfmt-support and unshare from Debian's packages.
arm64_root_tools() {
  local here
  here=$(dirname "${BASH_SOURCE[0]}")
  # shellcheck source=scripts/lib/system_packages.sh
  source "$here/system_packages.sh"
  ensure_debian_packages debootstrap qemu-user-static binfmt-support util-linux >&2 || return 1
  local tool
  for tool in debootstrap update-binfmts unshare chroot flock; do
    command -v "$tool" >/dev/null 2>&1 || { arm64_root_die "$tool is missing"; return 1; }
  done
}

# arm64_root_binfmt: binfmt_misc mounted and the qemu-aarch64 handler registered and enabled.
arm64_root_binfmt() {
  local fs=/proc/sys/fs/binfmt_misc
  if [ ! -e "$fs/register" ]; then
    mount -t binfmt_misc binfmt_misc "$fs" || { arm64_root_die "cannot mount binfmt_misc on $fs"; return 1; }
  fi
  if ! grep -qx enabled "$fs/qemu-aarch64" 2>/dev/null; then
    update-binfmts --enable qemu-aarch64 >&2 || true
  fi
  grep -qx enabled "$fs/qemu-aarch64" 2>/dev/null ||
    { arm64_root_die "the qemu-aarch64 binfmt handler is not registered ($fs/qemu-aarch64)"; return 1; }
}

# arm64_root_build DIR: debootstrap bookworm arm64 into DIR.building, mark it complete, rename it to DIR.
arm64_root_build() {
  local dir=$1 work="$1.building"
  if [ -e "$dir" ]; then
    # an interrupted build, or something that is not ours: only ever remove the former
    [ -f "$dir/.edge-arm64-root-building" ] || [ -z "$(ls -A "$dir" 2>/dev/null)" ] ||
      { arm64_root_die "$dir exists and is not an arm64 root made here; remove it or set EDGE_ARM64_ROOT"; return 1; }
    arm64_root_remove "$dir" || return 1
  fi
  arm64_root_remove "$work" || return 1
  mkdir -p "$work" && touch "$work/.edge-arm64-root-building" || return 1
  echo "== debootstrap $ARM64_ROOT_SUITE arm64 into $work (a few minutes: its second stage runs under qemu)" >&2
  if ! debootstrap --arch=arm64 --variant=minbase --include="$ARM64_ROOT_INCLUDE" \
      "$ARM64_ROOT_SUITE" "$work" "$ARM64_ROOT_MIRROR" > "$work.log" 2>&1; then
    tail -n 20 "$work.log" >&2
    arm64_root_unmount_under "$work"
    arm64_root_die "debootstrap failed (log: $work.log)"
    return 1
  fi
  arm64_root_unmount_under "$work"
  rm -f "$work/.edge-arm64-root-building" "$work.log"
  date -u +%Y-%m-%dT%H:%M:%SZ > "$work/$ARM64_ROOT_MARKER" || return 1
  mv -T "$work" "$dir"  # atomic: DIR appears complete, or not at all
}

# arm64_root_unmount_under DIR: unmount whatever an interrupted debootstrap left mounted under DIR.
arm64_root_unmount_under() {
  local dir mount_point
  dir=$(readlink -f "$1")
  if [ -z "$dir" ] || [ "$dir" = / ]; then return 0; fi
  # deepest first; /proc/self/mounts escapes spaces as \040, which a root path here never has
  awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r |
    while read -r mount_point; do umount -l "$mount_point" || true; done
}

# arm64_root_remove DIR: remove DIR without ever crossing into a mounted file system.
arm64_root_remove() {
  [ -e "$1" ] || return 0
  arm64_root_unmount_under "$1"
  rm -rf --one-file-system "$1" || { arm64_root_die "cannot remove $1"; return 1; }
}

# arm64_root_run DIR CMD...: CMD inside DIR with /proc and /dev (not /sys), in a private mount namespace.
arm64_root_run() {
  local dir=${1:-}
  shift || true
  if [ -z "$dir" ] || [ $# -eq 0 ]; then
    echo "usage: arm64_root run DIR CMD..." >&2
    return 2
  fi
  [ -f "$dir/$ARM64_ROOT_MARKER" ] || { arm64_root_die "$dir is not a complete arm64 root (run: arm64_root ensure)"; return 1; }
  # the host's resolver and CA bundle, so pip inside reaches the package index as the host does (a
  # machine whose egress passes a TLS proxy trusts its CA); PIP_CERT: a venv's pip trusts that bundle too
  cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
  local bundle=/etc/ssl/certs/ca-certificates.crt
  if [ -f "$bundle" ] && ! cmp -s "$bundle" "$dir$bundle"; then cp -L "$bundle" "$dir$bundle"; fi
  local env_vars=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
    "PIP_CERT=$bundle" "SSL_CERT_FILE=$bundle")
  local name
  for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY PIP_INDEX_URL PIP_DEFAULT_TIMEOUT; do
    [ -n "${!name:-}" ] && env_vars+=("$name=${!name}")
  done
  local launch=()
  # run as a script: exec, so that the script's process becomes the command
  [ "${ARM64_ROOT_EXEC:-0}" = 1 ] && launch=(exec)
  # shellcheck disable=SC2016  # the inner script expands its own positional parameters
  "${launch[@]}" unshare --mount --propagation private /bin/sh -c 'root=$1; shift
      mount -t proc proc "$root/proc" && mount --rbind /dev "$root/dev" && mount --make-rslave "$root/dev" ||
        exit 125
      exec chroot "$root" /usr/bin/env -i "$@"' arm64-root "$dir" "${env_vars[@]}" "$@"
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -u
  ARM64_ROOT_EXEC=1
  arm64_root "$@"
fi

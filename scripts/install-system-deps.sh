#!/usr/bin/env bash
# Debian packages the tests and the demo use: prometheus (+ promtool) for the
# real-Prometheus tests and rule checks, systemd for `systemd-analyze` checks of
# deploy/. Installs only what is missing; needs root (or sudo) on a fresh machine.
#
# `install-system-deps.sh venv PYTHON`: only what `PYTHON -m venv` needs. Debian
# and Ubuntu ship the system Python without ensurepip (it is in python3.X-venv),
# and `make setup` runs before the other packages are installed.
set -euo pipefail

apt_install() {
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing Debian packages: $*"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  # shellcheck disable=SC2046
  $sudo apt-get install -y -q --no-install-recommends $(printf '%s\n' "$@" | sort -u)
}

if [ "${1:-}" = "venv" ]; then
  python="${2:?usage: install-system-deps.sh venv PYTHON}"
  if "$python" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    exit 0
  fi
  ver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "error: '$python -m venv' needs ensurepip, which this Python lacks;" \
      "install your system's venv package for Python $ver (or set PYTHON=...)" >&2
    exit 1
  fi
  apt_install "python$ver-venv"
  exit 0
fi

need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
apt_install "${need[@]}"
# Debian's package may try to start the service; the tests start their own on 127.0.0.1.
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

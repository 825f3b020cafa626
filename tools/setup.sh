#!/usr/bin/env bash
# Set up everything edgevit needs on a fresh Debian 12 (or Ubuntu) machine, idempotently:
#   apt: g++, the aarch64 cross compiler, qemu user-mode emulation, debootstrap, Fashion-MNIST
#   pip: a venv with the exact versions in tools/requirements.lock, and edgevit itself (editable)
#   the aarch64 Python + TVM runtime that runs rpi4 builds under qemu (edgevit prepare)
# EDGEVIT_VENV chooses the venv folder (default .venv in the checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${EDGEVIT_VENV:-.venv}
APT_PACKAGES=(g++ gcc-aarch64-linux-gnu g++-aarch64-linux-gnu qemu-user-static qemu-user debootstrap dataset-fashion-mnist)

log() { printf '[setup] %s\n' "$*" >&2; }
sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  sudo_if_needed apt-get update -qq
  sudo_if_needed env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' 2>/dev/null || {
  echo "edgevit needs Python 3.11 (the torch wheels and the aarch64 runtime match it); set PYTHON=..." >&2; exit 6; }

lock_sha=$(sha256sum tools/requirements.lock | cut -c1-16)
if [ ! -f "$VENV/.edgevit-lock-$lock_sha" ]; then
  log "creating venv $VENV from tools/requirements.lock (torch is large: a few minutes)"
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --upgrade pip
  # The lock is a complete `pip freeze`, so --no-deps installs exactly it (hls4ml is used for its
  # fixed-point headers only and needs none of its own dependencies).
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r tools/requirements.lock
  touch "$VENV/.edgevit-lock-$lock_sha"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check --no-deps --no-build-isolation -e . >/dev/null 2>&1 ||
  "$VENV/bin/pip" install --no-deps --no-build-isolation -e .  # again, loudly, to show why it failed
"$VENV/bin/edgevit" prepare aarch64
log "ready: $VENV/bin/edgevit"

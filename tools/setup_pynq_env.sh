#!/usr/bin/env bash
# The off-board PYNQ test environment: a separate venv with the exact versions in tools/requirements-pynq.lock
# (pynq 4.0.0 needs numpy<2 and grpcio==1.64.0; edgevit's .venv has numpy 2). edgevit is not installed into it:
# the board-side code (edgevit/pynq) runs from the checkout or a bundle, needing only numpy and pynq, as on a
# board. Idempotent and cached by the lock's hash under ${EDGEVIT_CACHE:-~/.cache/edgevit}/pynq-venv-<hash>.
# Prints the venv's python on stdout (progress goes to stderr). tests/pynq calls it on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
lock_sha=$(sha256sum tools/requirements-pynq.lock | cut -c1-16)
VENV=${EDGEVIT_CACHE:-$HOME/.cache/edgevit}/pynq-venv-$lock_sha
if [ ! -f "$VENV/.complete" ]; then
  printf '[setup_pynq_env] creating %s from tools/requirements-pynq.lock\n' "$VENV" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r tools/requirements-pynq.lock >&2
  "$VENV/bin/python" -c 'import numpy, pynq; assert numpy.__version__ < "2"' >&2
  touch "$VENV/.complete"
fi
echo "$VENV/bin/python"

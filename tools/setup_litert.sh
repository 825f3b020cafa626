#!/usr/bin/env bash
# LiteRT as a peer in `edgevit bench`: a separate venv with litert-torch (the PyTorch -> .tflite converter) and
# ai-edge-litert (the runtime), exact versions in tools/requirements-litert.lock, then .tflite files of zoo models
# under ${EDGEVIT_CACHE:-~/.cache/edgevit}/tflite/. Separate because litert-torch pulls jax, transformers and
# torchao, which clash with edgevit's venv; same torch and timm as that venv, so the seeded zoo weights match.
# Needed only for the LiteRT column of the benchmark: not part of tools/setup.sh or the tests.
# Idempotent; the venv is cached by the lock's hash. About 6 GB (torch) and a few minutes to create.
# usage: tools/setup_litert.sh [MODEL ...]    (default: every zoo model)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
lock_sha=$(sha256sum tools/requirements-litert.lock | cut -c1-16)
VENV=${EDGEVIT_CACHE:-$HOME/.cache/edgevit}/litert-venv-$lock_sha
if [ ! -f "$VENV/.complete" ]; then
  printf '[setup_litert] creating %s from tools/requirements-litert.lock\n' "$VENV" >&2
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check --no-deps -r tools/requirements-litert.lock >&2
  "$VENV/bin/python" -c 'import litert_torch, ai_edge_litert.interpreter, timm' >&2
  touch "$VENV/.complete"
fi
PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" "$VENV/bin/python" tools/convert_litert.py "$@"

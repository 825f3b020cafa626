#!/usr/bin/env bash
# The main job, from a fresh machine: set up, compile MobileViT-XXS for a Raspberry Pi 4, run and verify
# it under qemu (no board here), and benchmark the host build against onnxruntime.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
VENV=${EDGEVIT_VENV:-.venv}
export PATH="$VENV/bin:$PATH"
mkdir -p build
set -x
edgevit targets
edgevit compile mobilevit_xxs --target rpi4 -o build/mvit_rpi4.tar
edgevit run build/mvit_rpi4.tar --verify
edgevit bench mobilevit_xxs --target host --runs 20 --json build/bench_mobilevit_xxs.json

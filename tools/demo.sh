#!/usr/bin/env bash
# The main job, from a fresh machine: set up, compile MobileViT-XXS for a Raspberry Pi 4, run and verify
# it under qemu (no board here), benchmark the host build against onnxruntime, then a small distributed
# run: a TVM RPC tracker and two edgevit nodes on loopback (CURVE keys) running MobileViT-XXS as a
# two-stage pipeline (tensors node to node, verified against onnxruntime) and an ED-ViT class-wise split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup.sh
VENV=${EDGEVIT_VENV:-.venv}
export PATH="$VENV/bin:$PATH"
mkdir -p build/demo
set -x
edgevit targets
edgevit compile mobilevit_xxs --target rpi4 -o build/mvit_rpi4.tar
edgevit run build/mvit_rpi4.tar --verify
edgevit bench mobilevit_xxs --target host --runs 20 --json build/bench_mobilevit_xxs.json
set +x

# Distributed: every process started here (and the session workers it forks) is killed on exit, whatever
# happens: each runs in a process group of its own (setsid), and the trap kills the groups.
pids=()
trap 'for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
setsid edgevit tracker --port "$port" & pids+=($!)
rm -rf build/demo/keys
edgevit keys build/demo/keys --members host,node1,node2 >/dev/null
for i in 1 2; do
  setsid edgevit node --tracker "127.0.0.1:$port" --key x86 --port $((port + 10 * i)) \
    --keys build/demo/keys --member "node$i" >/dev/null & pids+=($!)
done
printf 'nodes:\n  - {key: x86, count: 2, target: host, memory_mib: 256}\n' > build/demo/nodes.yaml
set -x
edgevit nodes --tracker "127.0.0.1:$port"
edgevit plan mobilevit_xxs --strategy pipeline --stages 2 --objective throughput --nodes build/demo/nodes.yaml \
  --tracker "127.0.0.1:$port" --keys build/demo/keys -o build/demo/pipeline
edgevit infer build/demo/pipeline --tracker "127.0.0.1:$port" --keys build/demo/keys --stream 50 --verify
edgevit plan fashion-vit --strategy class --k 2 --nodes build/demo/nodes.yaml -o build/demo/class.json
edgevit infer build/demo/class.json --tracker "127.0.0.1:$port" --keys build/demo/keys --dataset fashion-mnist \
  --stream 300
set +x

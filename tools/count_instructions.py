"""Executed aarch64 instructions per inference of edgevit builds, counted under qemu with a TCG plugin.

    python tools/count_instructions.py A.tar [B.tar ...] [--cpu cortex-a72,cortex-a76] [--warm 1] [--extra 2]
                                       [--json results/int8_arm_instructions.json]

Timings under qemu say nothing about a board; executed instructions are a speed proxy that does. Each
artifact (built with ``--target rpi4`` or another aarch64 target) runs with the board-side runner in the
aarch64 Python that ``edgevit prepare`` made, under Debian's dynamic ``qemu-aarch64`` (package qemu-user: the
static one cannot load plugins) with ``tools/qemu_plugin/insn_count.c`` counting every executed guest
instruction. One inference = (count of a process running ``warm + extra`` inferences - count of one running
``warm``) / ``extra``: loading Python, TVM and the model cancels out. PYTHONHASHSEED is fixed so both processes
do the same start-up work. Counts are for TVM_NUM_THREADS=1 (the plugin's counter is not atomic).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgevit import emulation  # noqa: E402
from edgevit.errors import EdgevitError, ExecutionError, ToolMissingError  # noqa: E402
from edgevit.frontend import TensorSpec  # noqa: E402
from edgevit.reference import random_inputs  # noqa: E402
from edgevit.runtime.artifact import Artifact  # noqa: E402
from edgevit.settings import cache_dir, seed  # noqa: E402
from edgevit.tables import format_table  # noqa: E402

PLUGIN_SOURCE = Path(__file__).resolve().parent / "qemu_plugin" / "insn_count.c"
QEMU = "qemu-aarch64"  # the dynamic build, from Debian's qemu-user (7.2: plugin API version 1)


def build_plugin() -> Path:
    """Compile the counting plugin with the host's C compiler, once per version of its source."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise ToolMissingError("no C compiler to build the qemu plugin: apt-get install gcc")
    source = PLUGIN_SOURCE.read_bytes()
    path = cache_dir("qemu_plugin") / f"insn_count-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if not path.exists():
        partial = path.with_suffix(".tmp")
        subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(PLUGIN_SOURCE)],
                       check=True)
        partial.replace(path)
    return path


def count(python: emulation.EmulatedPython, plugin: Path, cpu: str, artifact_dir: Path, inputs: Path,
          runs: int, tmp: Path) -> int:
    """Instructions one process executes: start-up plus ``runs`` inferences of the artifact."""
    out = tmp / f"count-{cpu}-{runs}.txt"
    command = [QEMU, "-cpu", cpu, "-plugin", f"{plugin},out={out}", "-L", str(python.root),
               str(python.root / "usr/bin/python3.11"), "-m", "edgevit.runtime.runner", str(artifact_dir),
               "--inputs", str(inputs), "--outputs", str(tmp / "outputs.npz"), "--repeat", str(runs)]
    env = {**python.environment(), "PYTHONHASHSEED": "0", "TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp, timeout=3600)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ExecutionError(f"qemu run failed (exit {proc.returncode}): {tail}")
    return int(out.read_text())


def count_artifact(path: Path, cpus: list[str], warm: int, extra: int) -> list[dict]:
    """Instructions per inference of one aarch64 artifact on each qemu CPU model."""
    if shutil.which(QEMU) is None:
        raise ToolMissingError(f"'{QEMU}' not found: apt-get install qemu-user (the static build cannot load "
                               "plugins)")
    python, plugin = emulation.prepare("aarch64"), build_plugin()
    rows = []
    with Artifact.open(path) as artifact, tempfile.TemporaryDirectory(prefix="edgevit-count-") as tmp:
        if artifact.arch != "aarch64":
            raise EdgevitError(f"{path} is built for {artifact.arch}: count aarch64 builds (--target rpi4)")
        specs = [TensorSpec.from_json(s) for s in artifact.metadata["inputs"]]
        inputs = Path(tmp) / "inputs.npz"
        np.savez(inputs, *random_inputs(specs, seed()))
        for cpu in cpus:
            base = count(python, plugin, cpu, artifact.dir, inputs, warm, Path(tmp))
            more = count(python, plugin, cpu, artifact.dir, inputs, warm + extra, Path(tmp))
            rows.append({"artifact": str(path), "model": artifact.metadata["model"]["name"], "cpu": cpu,
                         "instructions_per_inference": (more - base) / extra, "startup_and_warm": base,
                         "warm": warm, "extra": extra})
            print(f"[count] {path.name} on {cpu}: {rows[-1]['instructions_per_inference'] / 1e6:.1f} M "
                  "instructions per inference", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", type=Path, help="aarch64 artifacts (edgevit compile --target rpi4)")
    parser.add_argument("--cpu", default="cortex-a72,cortex-a76", help="qemu CPU models (default both Pi cores)")
    parser.add_argument("--warm", type=int, default=1, help="inferences in the baseline process (default 1)")
    parser.add_argument("--extra", type=int, default=2, help="inferences the second process adds (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.warm < 1 or args.extra < 1:
        parser.error("--warm and --extra must be >= 1")
    try:
        rows = [r for path in args.artifacts for r in count_artifact(path, args.cpu.split(","), args.warm, args.extra)]
    except EdgevitError as exc:
        print(f"count_instructions: error: {exc}", file=sys.stderr)
        return exc.exit_code
    table = format_table([[r["model"], Path(r["artifact"]).name, r["cpu"],
                           f"{r['instructions_per_inference'] / 1e6:.2f}"] for r in rows],
                         ["model", "artifact", "qemu cpu", "M instructions / inference"])
    print(table)
    if args.json:
        command = " ".join(["python", *sys.argv])
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(
            f"# aarch64 instructions per inference (qemu TCG plugin)\n\nCommand: `{command}`; one inference = "
            f"(count with {args.warm + args.extra} inferences - count with {args.warm}) / {args.extra}, "
            f"TVM_NUM_THREADS=1.\n\n{table}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

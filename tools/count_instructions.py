"""Executed aarch64 instructions per inference of edgevit builds, counted under qemu with a TCG plugin.

    python tools/count_instructions.py A.tar [B.tar ...] [--onnxruntime M.onnx ...] [--cpu cortex-a72,cortex-a76]
                                       [--warm 1] [--extra 2] [--json results/int8_arm_instructions.json]

Timings under qemu say nothing about a board; executed instructions are a speed proxy that does. Each
artifact (built with ``--target rpi4`` or another aarch64 target) runs with the board-side runner in the
aarch64 Python that ``edgevit prepare`` made, under Debian's dynamic ``qemu-aarch64`` (package qemu-user: the
static one cannot load plugins) with ``tools/qemu_plugin/insn_count.c`` counting every executed guest
instruction. One inference = (count of a process running ``warm + extra`` inferences - count of one running
``warm``) / ``extra``: loading Python, TVM and the model cancels out. PYTHONHASHSEED is fixed so both processes
do the same start-up work. Counts are for TVM_NUM_THREADS=1 (the plugin's counter is not atomic).

``--onnxruntime`` counts onnxruntime's aarch64 build (the PyPI wheel of the host's version, installed once into
edgevit's cache) on an ONNX file, one intra-op thread. onnxruntime picks its kernels from /proc/cpuinfo, which
under qemu-user is the x86 host's (its import then crashes): it reads an ARM one instead, the CPU part and
features of the counted core (Cortex-A72: no dot product; Cortex-A76: asimddp), from a hard-linked copy of the
aarch64 root with ``proc/cpuinfo`` added (qemu's ``-L`` prefix is looked up first for every absolute path).
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


#: /proc/cpuinfo of one core as Linux on that core writes it (part numbers and features from Arm's manuals).
CPUINFO = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                            "dcpop asimddp"),
}

ONNXRUNTIME_RUNNER = """
import sys
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
inputs = dict(np.load(sys.argv[2]))
for _ in range(int(sys.argv[3])):
    session.run(None, inputs)
"""


def prepare_onnxruntime(python: emulation.EmulatedPython, cpu: str) -> tuple[Path, Path]:
    """(aarch64 root whose /proc/cpuinfo describes ``cpu``, site-packages with onnxruntime's aarch64 wheel)."""
    from importlib import metadata

    if cpu not in CPUINFO:
        raise EdgevitError(f"no /proc/cpuinfo known for {cpu}; known: {', '.join(CPUINFO)}")
    version = metadata.version("onnxruntime")
    site = cache_dir("emulation", f"onnxruntime-{version}-manylinux_2_28_aarch64")
    if not (site / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--upgrade", "--target", str(site), "--platform", "manylinux_2_28_aarch64",
                        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
                        f"onnxruntime=={version}"], check=True)
        (site / ".complete").touch()
    root = cache_dir("emulation", f"root-{cpu}")
    if not (root / ".complete").exists():
        shutil.rmtree(root)
        subprocess.run(["cp", "-al", str(python.root), str(root)], check=True)
        part, features = CPUINFO[cpu]
        (root / "proc").mkdir(exist_ok=True)
        (root / "proc" / "cpuinfo").write_text(
            f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
            f"CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n")
        (root / ".complete").touch()
    return root, site


def count_onnxruntime(model: Path, cpus: list[str], warm: int, extra: int) -> list[dict]:
    """Instructions per inference of onnxruntime's aarch64 build on ``model`` on each qemu CPU model."""
    from edgevit.frontend import from_onnx_file

    specs = from_onnx_file(model).inputs  # a valid model with static inputs, before minutes of emulation
    python, plugin = emulation.prepare("aarch64"), build_plugin()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevit-count-ort-") as tmp:
        inputs, runner = Path(tmp) / "inputs.npz", Path(tmp) / "run_onnxruntime.py"
        np.savez(inputs, **{s.name: x for s, x in zip(specs, random_inputs(specs, seed()))})
        runner.write_text(ONNXRUNTIME_RUNNER)
        for cpu in cpus:
            root, site = prepare_onnxruntime(python, cpu)
            env = {**python.environment(), "PYTHONPATH": f"{site}:{python.site}", "PYTHONHASHSEED": "0",
                   "OMP_NUM_THREADS": "1"}
            counts = []
            for runs in (warm, warm + extra):
                out = Path(tmp) / f"count-{cpu}-{runs}.txt"
                proc = subprocess.run([QEMU, "-cpu", cpu, "-plugin", f"{plugin},out={out}", "-L", str(root),
                                       str(root / "usr/bin/python3.11"), str(runner), str(model.resolve()),
                                       str(inputs), str(runs)], capture_output=True, text=True, env=env, cwd=tmp,
                                      timeout=3600)
                if proc.returncode != 0 or not out.exists():
                    tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
                    raise ExecutionError(f"onnxruntime under qemu failed (exit {proc.returncode}): {tail}")
                counts.append(int(out.read_text()))
            rows.append({"artifact": f"onnxruntime {model.name}", "model": model.stem, "cpu": cpu,
                         "instructions_per_inference": (counts[1] - counts[0]) / extra, "startup_and_warm": counts[0],
                         "warm": warm, "extra": extra})
            print(f"[count] onnxruntime {model.name} on {cpu}: {rows[-1]['instructions_per_inference'] / 1e6:.1f} M "
                  "instructions per inference", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="*", type=Path, help="aarch64 artifacts (edgevit compile --target rpi4)")
    parser.add_argument("--onnxruntime", action="append", type=Path, default=[], metavar="MODEL.onnx",
                        help="also count onnxruntime's aarch64 build on this ONNX file (repeatable)")
    parser.add_argument("--cpu", default="cortex-a72,cortex-a76", help="qemu CPU models (default both Pi cores)")
    parser.add_argument("--warm", type=int, default=1, help="inferences in the baseline process (default 1)")
    parser.add_argument("--extra", type=int, default=2, help="inferences the second process adds (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args()
    if args.warm < 1 or args.extra < 1:
        parser.error("--warm and --extra must be >= 1")
    if not args.artifacts and not args.onnxruntime:
        parser.error("give artifacts to count, --onnxruntime MODEL.onnx, or both")
    try:
        cpus = args.cpu.split(",")
        rows = [r for path in args.artifacts for r in count_artifact(path, cpus, args.warm, args.extra)]
        rows += [r for path in args.onnxruntime for r in count_onnxruntime(path, cpus, args.warm, args.extra)]
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

"""Executed aarch64 instructions per inference of edgevit builds, onnxruntime and LiteRT, counted under qemu.

    python tools/count_instructions.py A.tar [B.tar ...] [--onnxruntime M.onnx ...] [--litert M.tflite ...]
                                       [--cpu cortex-a72,cortex-a76] [--warm 1] [--runs 2] [--json OUT.json]

Timings under qemu say nothing about a board; executed instructions are a speed proxy that does. Each
artifact (built with ``--target rpi4`` or another aarch64 target) runs on the board-side runtime in the aarch64
Python that ``edgevit prepare`` made, under Debian's dynamic ``qemu-aarch64`` (package qemu-user: the static one
cannot load plugins) with the TCG plugin ``tools/qemu_plugin/insn_count.c``. The script running the model does
``warm`` inferences, then marks the start of a region (a no-op system call the plugin watches), does ``runs``
more and marks its end: one inference = the region's count / ``runs``. Start-up (Python, the runtime, loading
the model), which varies by a few million instructions from process to process, stays out. Counts are for one
thread (TVM_NUM_THREADS=1, one intra-op thread for the peers: the plugin's counters are not atomic).

``--onnxruntime`` counts onnxruntime's aarch64 build (the PyPI wheel of the host's version, installed once into
edgevit's cache) on an ONNX file. onnxruntime picks its kernels from /proc/cpuinfo, which under qemu-user is the
x86 host's (its import then crashes): it reads an ARM one instead, the CPU part and features of the counted core
(Cortex-A72: no dot product; Cortex-A76: asimddp), from a hard-linked copy of the aarch64 root with
``proc/cpuinfo`` added (qemu's ``-L`` prefix is looked up first for every absolute path). ``--litert`` counts
LiteRT's aarch64 build (ai-edge-litert, the host's version: XNNPACK, one thread) on a .tflite file the same way.

Besides the total, the plugin counts instruction classes (see its header): FMLA, scalar FMADD, SDOT/UDOT,
integer multiply-accumulate, and SIMD&FP loads by width (``load_q`` 128-bit vectors, ``load_d`` 64-bit,
``load_s`` one float or smaller, ``load_lane``, ``load_dup`` for LD1R). The table shows the ones that say how a
kernel feeds its multiply-adds: vector loads vs scalar float loads.
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


#: Put around the counted inferences by every runner script: lseek(-1, code) is a no-op system call (EBADF) that
#: the plugin watches for (its MARK_START / MARK_END).
MARKERS = """
import os
def mark(code):
    try:
        os.lseek(-1, code, os.SEEK_SET)
    except OSError:
        pass
def counted(run, warm, runs):
    for _ in range(warm):
        run()
    mark(0x45564954)
    for _ in range(runs):
        run()
    mark(0x45564955)
"""

EDGEVIT_RUNNER = MARKERS + """
import sys
import numpy as np
from edgevit.runtime.artifact import Artifact
from edgevit.runtime.tvm_runtime import CompiledModel
model = CompiledModel(Artifact.from_dir(sys.argv[1]).library)
with np.load(sys.argv[2]) as data:
    inputs = [data[f"arr_{i}"] for i in range(len(data.files))]
counted(lambda: model(inputs), int(sys.argv[3]), int(sys.argv[4]))
if len(sys.argv) > 5:  # where each library sits in this process, for the per-kernel profile
    with open("/proc/self/maps") as maps, open(sys.argv[5], "w") as out:
        out.write(maps.read())
"""


CLASSES = ("total", "fmla", "fmadd", "dot", "int_mac", "load_q", "load_d", "load_s", "load_lane", "load_dup", "other")


def profile_artifact(path: Path, cpu: str, warm: int, runs: int) -> list[dict]:
    """Per function (the model's kernels by name; other libraries as a whole): instructions of one inference by
    class, from the plugin's per-block counts and where each library was loaded in the counted process."""
    import bisect

    _require_qemu()
    python, plugin = emulation.prepare("aarch64"), build_plugin()
    with Artifact.open(path) as artifact, tempfile.TemporaryDirectory(prefix="edgevit-profile-") as tmp:
        tmp = Path(tmp)
        blocks, maps = tmp / "blocks.txt", tmp / "maps.txt"
        command, env = _edgevit_command(artifact, python, cpu, tmp, warm, runs)
        run_counted(command + [str(maps)], env, plugin, tmp, "the edgevit runtime (profiled)", blocks)
        if not blocks.exists() or not maps.exists():
            raise ExecutionError("the profiled run wrote no block profile or memory map")
        library = artifact.dir / "model.so"
        symbols = _symbols(library)
        symbol_starts = [address for address, _, _ in symbols]
        regions, bases = [], {}  # executable (start, end, path); each file's load address (its offset-0 mapping)
        for line in maps.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 6:
                start, end = (int(x, 16) for x in fields[0].split("-"))
                if int(fields[2], 16) == 0:
                    bases.setdefault(fields[5], start)
                if "x" in fields[1]:
                    regions.append((start, end, fields[5]))
        regions.sort()
        starts = [r[0] for r in regions]
        totals: dict[str, np.ndarray] = {}
        for line in blocks.read_text().splitlines():
            fields = line.split()
            vaddr, executed, classes = int(fields[0], 16), int(fields[1]), np.array(fields[2:], dtype=np.int64)
            i = bisect.bisect_right(starts, vaddr) - 1
            name = "(unmapped)"
            if i >= 0 and vaddr < regions[i][1]:
                file = regions[i][2]
                name = Path(file).name
                if name == library.name:  # ELF addresses are relative to the library's load address
                    name = _symbol_at(symbols, symbol_starts, vaddr - bases.get(file, 0))
            totals[name] = totals.get(name, 0) + executed * classes
    rows = [{"function": name, **{c: float(v) / runs for c, v in zip(CLASSES, counts)}}
            for name, counts in totals.items()]
    return sorted(rows, key=lambda r: -r["total"])


def _symbols(library: Path) -> list[tuple[int, int, str]]:
    """(address, size, name) of the code in an aarch64 library, by address: its function symbols, plus the
    parallel-loop bodies TVM emits as unnamed functions, named after the kernel that launches them."""
    tools = {name: shutil.which(f"aarch64-linux-gnu-{name}") or shutil.which(name) for name in ("nm", "objdump")}
    proc = subprocess.run([tools["nm"], "--defined-only", "-S", "-n", str(library)], capture_output=True, text=True)
    found = []
    for line in proc.stdout.splitlines():
        fields = line.split()  # address [size] type name: local compute functions have no size
        if len(fields) in (3, 4) and fields[-2].lower() == "t":
            found.append((int(fields[0], 16), int(fields[1], 16) if len(fields) == 4 else 0, fields[-1]))
    return sorted(found + _launched_bodies(tools["objdump"], library, {f[0] for f in found}))


def _launched_bodies(objdump: str, library: Path, named: set[int]) -> list[tuple[int, int, str]]:
    """Unnamed code a named function takes the address of (``adrp`` + ``add`` into the text: the body it hands
    to TVMBackendParallelLaunch), as (address, 0, that function's name)."""
    import re

    proc = subprocess.run([objdump, "-d", "--no-show-raw-insn", str(library)], capture_output=True, text=True)
    text_end = max(named) if named else 0
    owner, pages, bodies = None, {}, {}
    for line in proc.stdout.splitlines():
        head = re.match(r"^([0-9a-f]+) <(.+)>:$", line)
        if head:
            owner, pages = head.group(2), {}
            continue
        page = re.search(r"\badrp\s+(x\d+), ([0-9a-f]+)", line)
        if page:
            pages[page.group(1)] = int(page.group(2), 16)
            continue
        add = re.search(r"\badd\s+(x\d+), (x\d+), #0x([0-9a-f]+)", line)
        if add and add.group(2) in pages and owner:
            target = pages[add.group(2)] + int(add.group(3), 16)
            if target <= text_end and target not in named:
                bodies.setdefault(target, owner)
    return [(address, 0, name) for address, name in bodies.items()]


def _symbol_at(symbols: list[tuple[int, int, str]], starts: list[int], address: int) -> str:
    """The kernel whose code holds ``address`` (``starts``: the symbols' addresses, in order)."""
    import bisect

    # Code past a sized symbol's end without a symbol of its own counts for the code before it.
    i = bisect.bisect_right(starts, address) - 1
    return symbols[i][2].removesuffix("_compute_") if i >= 0 else "model.so (no symbol)"


def format_profile(rows: list[dict], top: int) -> str:
    """The ``top`` functions by instructions per inference, with the classes that explain them."""
    total = sum(r["total"] for r in rows) or 1
    return format_table([[r["function"][:70], f"{r['total'] / 1e6:.2f}", f"{100 * r['total'] / total:.1f}",
                          f"{r['fmla'] / 1e6:.2f}", f"{r['load_q'] / 1e6:.2f}", f"{r['load_s'] / 1e6:.2f}",
                          f"{r['load_dup'] / 1e6:.2f}", f"{r['other'] / 1e6:.2f}"] for r in rows[:top]],
                        ["function", "M instr (all calls)", "%", "M fmla", "M vector loads", "M scalar FP loads",
                         "M ld1r", "M other"])


def read_counts(path: Path) -> tuple[dict[str, int], dict[str, int]]:
    """The plugin's output, ``class whole region`` per line: (whole-process counts, counts between the markers)."""
    whole, region = {}, {}
    for line in path.read_text().splitlines():
        name, total, marked = line.split()
        whole[name], region[name] = int(total), int(marked)
    return whole, region


def run_counted(command: list[str], env: dict, plugin: Path, tmp: Path, what: str,
                blocks: Path | None = None) -> tuple[dict, dict]:
    """Run an aarch64 command under qemu with the plugin: (whole-process counts, counts between the markers);
    with ``blocks``, the plugin also writes its per-block profile there."""
    out = tmp / "counts.txt"
    out.unlink(missing_ok=True)
    arguments = f"{plugin},out={out}" + (f",blocks={blocks}" if blocks else "")
    proc = subprocess.run([QEMU, "-plugin", arguments, *command], capture_output=True, text=True,
                          env=env, cwd=tmp, timeout=3600)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ExecutionError(f"{what} under qemu failed (exit {proc.returncode}): {tail}")
    return read_counts(out)


def make_row(artifact: str, model: str, cpu: str, counts: tuple[dict, dict], warm: int, runs: int) -> dict:
    """One table row: counts of one inference by class (the marked region / ``runs``)."""
    whole, region = counts
    if region["total"] == 0:
        raise ExecutionError(f"{artifact}: the runner never reached its end marker")
    classes = {name: value / runs for name, value in region.items()}
    row = {"artifact": artifact, "model": model, "cpu": cpu, "instructions_per_inference": classes["total"],
           "per_inference": classes, "whole_process": whole["total"], "warm": warm, "runs": runs}
    print(f"[count] {artifact} on {cpu}: {classes['total'] / 1e6:.1f} M instructions per inference",
          file=sys.stderr, flush=True)
    return row


def _edgevit_command(artifact: Artifact, python: emulation.EmulatedPython, cpu: str, tmp: Path, warm: int,
                     runs: int) -> tuple[list[str], dict]:
    """(qemu arguments, environment) that run ``warm + runs`` inferences of an opened aarch64 artifact on its
    seeded random inputs, the last ``runs`` between the markers."""
    if artifact.arch != "aarch64":
        raise EdgevitError(f"{artifact.dir} is built for {artifact.arch}: count aarch64 builds (--target rpi4)")
    inputs, runner = tmp / "inputs.npz", tmp / "run_edgevit.py"
    if not inputs.exists():
        np.savez(inputs, *random_inputs([TensorSpec.from_json(s) for s in artifact.metadata["inputs"]], seed()))
        runner.write_text(EDGEVIT_RUNNER)
    env = {**python.environment(), "PYTHONHASHSEED": "0", "TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return ["-cpu", cpu, "-L", str(python.root), str(python.root / "usr/bin/python3.11"), str(runner),
            str(artifact.dir), str(inputs), str(warm), str(runs)], env


def _require_qemu() -> None:
    if shutil.which(QEMU) is None:
        raise ToolMissingError(f"'{QEMU}' not found: apt-get install qemu-user (the static build cannot load "
                               "plugins)")


def count_artifact(path: Path, cpus: list[str], warm: int, runs: int) -> list[dict]:
    """Instructions per inference of one aarch64 artifact on each qemu CPU model."""
    _require_qemu()
    python, plugin = emulation.prepare("aarch64"), build_plugin()
    rows = []
    with Artifact.open(path) as artifact, tempfile.TemporaryDirectory(prefix="edgevit-count-") as tmp:
        for cpu in cpus:
            missing = _missing_features(artifact, cpu)
            if missing:  # e.g. an rpi5 build (sdot) on the Cortex-A72: it would stop at the first sdot
                print(f"[count] {path} not counted on {cpu}: built for {', '.join(missing)}, which {cpu} lacks",
                      file=sys.stderr, flush=True)
                continue
            command, env = _edgevit_command(artifact, python, cpu, Path(tmp), warm, runs)
            counts = run_counted(command, env, plugin, Path(tmp), "the edgevit runtime")
            rows.append(make_row(str(path), artifact.metadata["model"]["name"], cpu, counts, warm, runs))
    return rows


#: /proc/cpuinfo of one core as Linux on that core writes it (part numbers and features from Arm's manuals).
CPUINFO = {
    "cortex-a72": ("0xd08", "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"),
    "cortex-a76": ("0xd0b", "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc "
                            "dcpop asimddp"),
}

#: LLVM target features an artifact may be built with, as the /proc/cpuinfo feature a core needs for them.
CPU_FEATURES = {"+dotprod": "asimddp"}


def _missing_features(artifact: Artifact, cpu: str) -> list[str]:
    """The LLVM features the artifact was built with that ``cpu`` does not have (by :data:`CPUINFO`)."""
    features = CPUINFO.get(cpu, ("", ""))[1].split()
    mattr = artifact.metadata.get("target", {}).get("tvm", {}).get("mattr", [])
    return [f for f in mattr if f in CPU_FEATURES and CPU_FEATURES[f] not in features]


ONNXRUNTIME_RUNNER = MARKERS + """
import sys
import numpy as np
import onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = options.inter_op_num_threads = 1
session = ort.InferenceSession(sys.argv[1], options, providers=["CPUExecutionProvider"])
inputs = dict(np.load(sys.argv[2]))
counted(lambda: session.run(None, inputs), int(sys.argv[3]), int(sys.argv[4]))
"""


def _install_aarch64(site: Path, pins: list[str], platforms: tuple[str, ...]) -> Path:
    """``pins`` (exact versions, no dependency resolution) as aarch64 wheels into ``site``, once."""
    if not (site / ".complete").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
                        "--upgrade", "--target", str(site), *(f"--platform={p}" for p in platforms),
                        "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp", *pins],
                       check=True)
        (site / ".complete").touch()
    return site


def arm_root(python: emulation.EmulatedPython, cpu: str) -> Path:
    """A hard-linked copy of the aarch64 root whose /proc/cpuinfo describes ``cpu`` (the peers pick their
    kernels from it)."""
    if cpu not in CPUINFO:
        raise EdgevitError(f"no /proc/cpuinfo known for {cpu}; known: {', '.join(CPUINFO)}")
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
    return root


def prepare_onnxruntime(python: emulation.EmulatedPython, cpu: str) -> tuple[Path, Path]:
    """(aarch64 root whose /proc/cpuinfo describes ``cpu``, site-packages with onnxruntime's aarch64 wheel)."""
    from importlib import metadata

    root = arm_root(python, cpu)
    version = metadata.version("onnxruntime")
    site = _install_aarch64(cache_dir("emulation", f"onnxruntime-{version}-manylinux_2_28_aarch64"),
                            [f"onnxruntime=={version}"], ("manylinux_2_28_aarch64",))
    return root, site


def count_onnxruntime(model: Path, cpus: list[str], warm: int, runs: int) -> list[dict]:
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
            counts = run_counted(["-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), str(runner),
                                  str(model.resolve()), str(inputs), str(warm), str(runs)], env, plugin, Path(tmp),
                                 "onnxruntime")
            rows.append(make_row(f"onnxruntime {model.name}", model.stem, cpu, counts, warm, runs))
    return rows


LITERT_RUNNER = MARKERS + """
import sys
import numpy as np
from ai_edge_litert.interpreter import Interpreter
interpreter = Interpreter(model_path=sys.argv[1], num_threads=1)
interpreter.allocate_tensors()
rng = np.random.default_rng(int(sys.argv[2]))
for detail in interpreter.get_input_details():
    interpreter.set_tensor(detail["index"], rng.standard_normal(detail["shape"]).astype(detail["dtype"]))
counted(interpreter.invoke, int(sys.argv[3]), int(sys.argv[4]))
"""

#: ai-edge-litert's dependencies, pinned to the versions of edgevit's own venv (which runs the same LiteRT).
LITERT_DEPENDENCIES = ("numpy", "flatbuffers", "protobuf", "ml_dtypes", "tqdm", "typing_extensions",
                       "backports.strenum")


def prepare_litert() -> Path:
    """Site-packages with LiteRT's aarch64 wheel (the host's ai-edge-litert version) and its dependencies."""
    from importlib import metadata

    try:
        pins = [f"{name}=={metadata.version(name)}" for name in ("ai-edge-litert", *LITERT_DEPENDENCIES)]
    except metadata.PackageNotFoundError as exc:
        raise ToolMissingError(f"{exc.name} is not installed here: pip install -r tools/requirements.lock") from exc
    site = cache_dir("emulation", f"litert-{hashlib.sha256(' '.join(pins).encode()).hexdigest()[:12]}-aarch64")
    return _install_aarch64(site, pins, ("manylinux_2_27_aarch64", "manylinux_2_28_aarch64",
                                         "manylinux_2_17_aarch64"))


def count_litert(model: Path, cpus: list[str], warm: int, runs: int) -> list[dict]:
    """Instructions per inference of LiteRT's aarch64 build (XNNPACK, one thread) on a .tflite file."""
    if model.suffix != ".tflite" or not model.is_file():
        raise EdgevitError(f"{model}: not a .tflite file")
    python, plugin, site = emulation.prepare("aarch64"), build_plugin(), prepare_litert()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgevit-count-litert-") as tmp:
        runner = Path(tmp) / "run_litert.py"
        runner.write_text(LITERT_RUNNER)
        for cpu in cpus:
            root = arm_root(python, cpu)
            env = {**python.environment(), "PYTHONPATH": str(site), "PYTHONHASHSEED": "0"}
            counts = run_counted(["-cpu", cpu, "-L", str(root), str(root / "usr/bin/python3.11"), str(runner),
                                  str(model.resolve()), str(seed()), str(warm), str(runs)], env, plugin, Path(tmp),
                                 "LiteRT")
            rows.append(make_row(f"litert {model.name}", model.stem, cpu, counts, warm, runs))
    return rows


def table(rows: list[dict]) -> str:
    """Per row: total, FMLA, vector (128-bit) and scalar float loads per inference, in millions."""
    def millions(row, name):
        return f"{row['per_inference'].get(name, 0) / 1e6:.2f}"

    return format_table([[r["model"], Path(r["artifact"]).name, r["cpu"], millions(r, "total"), millions(r, "fmla"),
                          millions(r, "dot"), millions(r, "load_q"), millions(r, "load_s")] for r in rows],
                        ["model", "artifact", "qemu cpu", "M instructions / inference", "M fmla", "M sdot/udot",
                         "M vector loads (q)", "M scalar FP loads (s)"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="*", type=Path, help="aarch64 artifacts (edgevit compile --target rpi4)")
    parser.add_argument("--onnxruntime", action="append", type=Path, default=[], metavar="MODEL.onnx",
                        help="also count onnxruntime's aarch64 build on this ONNX file (repeatable)")
    parser.add_argument("--litert", action="append", type=Path, default=[], metavar="MODEL.tflite",
                        help="also count LiteRT's aarch64 build on this .tflite file (repeatable)")
    parser.add_argument("--cpu", default="cortex-a72,cortex-a76", help="qemu CPU models (default both Pi cores)")
    parser.add_argument("--warm", type=int, default=1, help="inferences before the counted region (default 1)")
    parser.add_argument("--runs", type=int, default=2, help="inferences counted (default 2)")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    parser.add_argument("--profile", type=int, metavar="N", help="per kernel instead: the N functions of each "
                        "artifact that execute the most instructions (first --cpu only)")
    args = parser.parse_args()
    if args.warm < 1 or args.runs < 1:
        parser.error("--warm and --runs must be >= 1")
    if not args.artifacts and not args.onnxruntime and not args.litert:
        parser.error("give artifacts to count, --onnxruntime MODEL.onnx and/or --litert MODEL.tflite")
    if args.profile:
        try:
            for path in args.artifacts:
                rows = profile_artifact(path, args.cpu.split(",")[0], args.warm, args.runs)
                print(f"{path} on {args.cpu.split(',')[0]}, per inference:\n{format_profile(rows, args.profile)}")
                if args.json:
                    args.json.write_text(json.dumps({"command": " ".join(["python", *sys.argv]), "rows": rows},
                                                    indent=1) + "\n")
        except EdgevitError as exc:
            print(f"count_instructions: error: {exc}", file=sys.stderr)
            return exc.exit_code
        return 0
    try:
        cpus = args.cpu.split(",")
        rows = [r for path in args.artifacts for r in count_artifact(path, cpus, args.warm, args.runs)]
        rows += [r for path in args.onnxruntime for r in count_onnxruntime(path, cpus, args.warm, args.runs)]
        rows += [r for path in args.litert for r in count_litert(path, cpus, args.warm, args.runs)]
    except EdgevitError as exc:
        print(f"count_instructions: error: {exc}", file=sys.stderr)
        return exc.exit_code
    text = table(rows)
    print(text)
    if args.json:
        command = " ".join(["python", *sys.argv])
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")
        args.json.with_suffix(".md").write_text(
            f"# aarch64 instructions per inference (qemu TCG plugin)\n\nCommand: `{command}`; one inference = "
            f"the count of {args.runs} inferences after {args.warm} warm-up / {args.runs}, one thread.\n\n"
            f"{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

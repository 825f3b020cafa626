"""Every edgevit path on models outside the zoo: timm hybrids exported to ONNX, as a user would bring them.

    .venv/bin/python tools/outside_zoo.py export repvit_m0_9 efficientvit_b0 ... [--work /tmp/outside]
    .venv/bin/python tools/outside_zoo.py matrix [--models NAME ...] [--steps host rpi4 ...] [--redo | --render]
        [--work /tmp/outside] [--results results/outside_zoo]

``export`` builds each timm model with seeded random weights drawn like the zoo's (:func:`edgevit.zoo.timm_models
.build`: no exact zeros) and writes WORK/NAME.onnx (opset 17, legacy exporter, checked against torch).
``matrix`` runs, per ONNX file, each step below as the edgevit commands a user would type, in a subprocess, and
records PASS / FAIL / TRACEBACK with one line of reason and the commands. It is resumable: the state is
WORK/matrix.json and a step already recorded is skipped unless ``--redo``. It writes the table (.md) and the
JSON to ``--results``. Steps (the brief's letters):

- ``host`` (a): compile for host, ``run --verify`` against onnxruntime
- ``rpi4`` (b): compile for rpi4, ``run --verify`` under qemu
- ``int8`` (c): ``quantize --calibration fashion-mnist --per-channel``, compile for host, ``run --verify``
- ``hls`` / ``hls_int8`` (d): ``edgevit hls`` on the float file and on the QDQ file (needs ``int8`` first)
- ``flash`` / ``flash_int8``: the ``hls`` / ``hls_int8`` project C-simulated (``hls build --csim``), bundled with
  stand-ins for Vivado's .bit/.hwh (no Vivado here: :func:`edgevit.pynq.manifest.write_stand_in_bit`) and flashed
  to the simulated board (``--host local:DIR``, ``EDGEVIT_PYNQ_SIM_LIB``: the project's top.cpp as the
  accelerator, docs/pynq.md), which runs the self-test on the first input, CPU part included
- ``tflite`` (e): the model converted to .tflite with litert-torch (in the LiteRT venv of
  tools/setup_litert.sh, same weights), compile for host, ``run --verify`` against LiteRT
- ``pipeline`` (f): ``plan --strategy pipeline --stages 2`` over two x86 nodes of a local cluster (loopback,
  CURVE), ``infer --verify`` (every result compared with onnxruntime on the whole model)
- ``bench`` (g): ``bench --runs 5`` (correctness of the table only; times under load mean nothing)

A FAIL is a documented error (one ``edgevit: error:`` line, exit code of :mod:`edgevit.errors`); a TRACEBACK
is a defect.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STEPS = ["host", "rpi4", "int8", "hls", "hls_int8", "flash", "flash_int8", "tflite", "pipeline", "bench"]
STEP_TIMEOUT = 3600
LITERT_RTOL = 1e-4   # XNNPACK reorders float sums (as tools/convert_litert.py)
NOTES = "## Notes"   # the results file's hand-written part, from this heading on


def _say(message: str) -> None:
    print(f"[outside_zoo] {message}", file=sys.stderr, flush=True)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "TVM_NUM_THREADS": "1"}


def build(name: str):
    """A timm model (eval mode) with seeded random weights, exact zeros redrawn as the zoo's builder does."""
    from edgevit.zoo.timm_models import build_timm

    return build_timm(name)


def _example(size: int = 224):
    import numpy as np

    return np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)


def export(names: list[str], work: Path) -> None:
    """WORK/NAME.onnx per timm name, checked against torch (max rel error <= 1e-4, same top-1)."""
    import numpy as np
    import onnxruntime
    import torch

    torch.set_num_threads(1)
    for name in names:
        path = work / f"{name}.onnx"
        if path.exists():
            _say(f"{name}: {path} exists")
            continue
        model, x = build(name), torch.from_numpy(_example())
        torch.onnx.export(model, (x,), str(path), opset_version=17, dynamo=False, input_names=["input"],
                          output_names=["logits"])
        with torch.no_grad():
            expected = model(x).numpy()
        got = onnxruntime.InferenceSession(str(path)).run(None, {"input": x.numpy()})[0]
        rel = float(np.abs(got - expected).max() / np.abs(expected).max())
        if rel > 1e-4 or got.argmax() != expected.argmax():
            path.unlink()
            raise SystemExit(f"{name}: onnxruntime differs from torch (max rel error {rel:.2g}); not kept")
        _say(f"{name}: {path} (onnxruntime vs torch max rel error {rel:.1g})")


def convert_tflite(names: list[str], work: Path) -> None:
    """WORK/NAME.tflite with litert-torch (run in the LiteRT venv), checked against torch."""
    import litert_torch
    import numpy as np
    import torch
    from ai_edge_litert.interpreter import Interpreter

    for name in names:
        path = work / f"{name}.tflite"
        if path.exists():
            continue
        model, x = build(name), torch.from_numpy(_example())
        litert_torch.convert(model, (x,)).export(str(path))
        with torch.no_grad():
            expected = model(x).numpy()
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x.numpy())
        interpreter.invoke()
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        rel = float(np.abs(got - expected).max() / np.abs(expected).max())
        if rel > LITERT_RTOL or got.argmax() != expected.argmax():
            path.unlink()
            raise SystemExit(f"{name}: LiteRT differs from torch (max rel error {rel:.2g}); not kept")
        _say(f"{name}: {path} (LiteRT vs torch max rel error {rel:.1g})")


class Step:
    """The commands of one matrix cell, run in order until one fails; the verdict and one line of reason."""

    def __init__(self, work: Path, name: str):
        self.work, self.name, self.commands, self.log = work, name, [], []

    def run(self, argv: list[str], python: str = sys.executable, edgevit: bool = True, env: dict | None = None,
            timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        command = [python, "-m", "edgevit.cli", *argv] if edgevit else [python, *argv]
        shown = ("edgevit " + shlex.join(argv)) if edgevit else shlex.join([Path(python).name, *argv])
        self.commands.append(shown)
        _say(f"  $ {shown}")
        try:
            done = subprocess.run(command, cwd=self.work, env=env or _env(), capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            raise StepFailed("TIMEOUT", f"`{shown}` took more than {timeout:.0f} s")
        self.log.append(f"$ {shown}\n{done.stdout}\n{done.stderr}\n[exit {done.returncode}]")
        if done.returncode != 0:
            traceback = "Traceback (most recent call last)" in done.stderr
            lines = [line for line in done.stderr.splitlines() if line.strip()]
            errors = [line for line in lines if line.startswith("edgevit: error:")]
            reason = (errors or lines or [f"exit {done.returncode}"])[-1].strip()
            raise StepFailed("TRACEBACK" if traceback else "FAIL", f"exit {done.returncode}: {reason[:400]}")
        return done


class StepFailed(Exception):
    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


def _line(text: str, start: str) -> str:
    found = [line for line in text.splitlines() if line.strip().startswith(start)]
    return found[-1].strip() if found else ""


def _compile_run(step: Step, source: str, target: str, artifact: str, extra: tuple = ()) -> str:
    step.run(["compile", source, "--target", target, "-o", artifact])
    done = step.run(["run", artifact, "--verify", *extra])
    return _line(done.stdout, "verify vs")


def step_host(step: Step, name: str) -> str:
    return _compile_run(step, f"{name}.onnx", "host", f"{name}.host.tar")


def step_rpi4(step: Step, name: str) -> str:
    return _compile_run(step, f"{name}.onnx", "rpi4", f"{name}.rpi4.tar")


def step_int8(step: Step, name: str) -> str:
    step.run(["quantize", f"{name}.onnx", "--calibration", "fashion-mnist", "--per-channel", "-o", f"{name}.q.onnx"])
    return _compile_run(step, f"{name}.q.onnx", "host", f"{name}.q.host.tar")


def _hls(step: Step, source: str, project: str) -> str:
    done = step.run(["hls", source, "-o", project])
    step.run(["hls", "report", project])
    lines = (done.stdout + done.stderr).splitlines()
    summary = [line.strip() for line in lines if line.startswith(("ONNX ops on the accelerator", "WARNING"))]
    return " | ".join(summary) or lines[0]


def step_hls(step: Step, name: str) -> str:
    return _hls(step, f"{name}.onnx", f"{name}.hls")


def step_hls_int8(step: Step, name: str) -> str:
    if not (step.work / f"{name}.q.onnx").exists():
        raise StepFailed("SKIPPED", f"no {name}.q.onnx (the int8 step did not make it)")
    return _hls(step, f"{name}.q.onnx", f"{name}.q.hls")


def _flash(step: Step, project: str) -> str:
    """C-sim, bundle and flash ``project`` to the simulated board: the C-sim line and the self-test line."""
    from edgevit.pynq import manifest, simlib
    from edgevit.targets import get_target

    if not (step.work / project / "program.json").exists():
        raise StepFailed("SKIPPED", f"no {project} (its hls step did not make it)")
    csim = _line(step.run(["hls", "build", project, "--csim"]).stdout, "C-simulation of")
    board = json.loads((step.work / project / "program.json").read_text())["board"]
    part = get_target(board).require_fpga().part
    bit, hwh = f"{project}.stand-in.bit", f"{project}.stand-in.hwh"
    manifest.write_stand_in_bit(step.work / bit, part)
    manifest.write_stand_in_hwh(step.work / hwh, manifest.normalize_part(part))
    bundle = f"{project}.bundle"
    step.run(["bundle", project, "-o", bundle, "--bitstream", bit, "--hwh", hwh])
    setup = subprocess.run(["bash", str(ROOT / "tools" / "setup_pynq_env.sh")], capture_output=True, text=True)
    if setup.returncode != 0:
        raise StepFailed("SKIPPED", "no pynq venv (tools/setup_pynq_env.sh failed)")
    home = step.work / "board"
    home.mkdir(exist_ok=True)
    env = {**_env(), "EDGEVIT_PYNQ_SIM_LIB": str(simlib.build(step.work / project))}
    step.commands.append(f"export EDGEVIT_PYNQ_SIM_LIB=$(python -c 'from edgevit.pynq import simlib; "
                         f"print(simlib.build(\"{project}\"))')")
    done = step.run(["flash", bundle, "--board", board, "--host", f"local:{home}", "--remote-python",
                     setup.stdout.strip().splitlines()[-1], "--count", "1", "--timeout", "3600"], env=env)
    return f"{csim} | {_line(done.stdout, 'self-test on')}"


def step_flash(step: Step, name: str) -> str:
    return _flash(step, f"{name}.hls")


def step_flash_int8(step: Step, name: str) -> str:
    return _flash(step, f"{name}.q.hls")


def step_tflite(step: Step, name: str) -> str:
    venvs = sorted(glob.glob(os.path.expanduser("~/.cache/edgevit/litert-venv-*/bin/python")))
    if not venvs:
        raise StepFailed("SKIPPED", "no LiteRT venv (tools/setup_litert.sh makes it)")
    step.run([str(Path(__file__).resolve()), "tflite", name, "--work", str(step.work)], python=venvs[-1],
             edgevit=False)
    return _compile_run(step, f"{name}.tflite", "host", f"{name}.tflite.tar", ("--rtol", str(LITERT_RTOL)))


def step_pipeline(step: Step, name: str, cluster) -> str:
    nodes = step.work / "nodes-x86x2.yaml"
    nodes.write_text("nodes:\n  - {key: x86, count: 2, target: host}\n")
    plan = f"{name}.plan"
    step.run(["plan", f"{name}.onnx", "--strategy", "pipeline", "--nodes", nodes.name, "--stages", "2",
              *cluster.host_args, "-o", plan])
    report = step.work / f"{name}.infer.json"
    step.run(["infer", plan, "--tracker", cluster.address, *cluster.host_args, "--stream", "3", "--verify",
              "--json", report.name, "--wait", "300", "--timeout", "600", "--stall-timeout", "600"])
    verify = json.loads(report.read_text())["verify"]
    if not verify.get("ok"):
        raise StepFailed("FAIL", f"infer --verify: {json.dumps(verify)[:300]}")
    return f"2 stages, {verify.get('checked')} results verified, max rel error {verify.get('max_rel_error', 0):.1e}"


def step_bench(step: Step, name: str) -> str:
    done = step.run(["bench", f"{name}.onnx", "--runs", "5"])
    return bench_verdict(done.stdout)


def bench_verdict(stdout: str) -> str:
    """The bench's ratio line if it says the two engines' outputs agree (times under load mean nothing)."""
    line = _line(stdout, "edgevit / onnxruntime")
    if "outputs agree" not in line:
        raise StepFailed("FAIL", f"the bench table does not say the outputs agree: {line or 'no ratio line'}")
    return line[:300]


STEP_FUNCTIONS = {"host": step_host, "rpi4": step_rpi4, "int8": step_int8, "hls": step_hls,
                  "hls_int8": step_hls_int8, "flash": step_flash, "flash_int8": step_flash_int8, "tflite": step_tflite,
                  "pipeline": step_pipeline, "bench": step_bench}


def _cell(work: Path, name: str, step_name: str, cluster) -> dict:
    step, start = Step(work, name), time.monotonic()
    try:
        extra = (cluster(),) if step_name == "pipeline" else ()
        status, reason = "PASS", STEP_FUNCTIONS[step_name](step, name, *extra)
    except StepFailed as failed:
        status, reason = failed.status, failed.reason
    (work / "logs").mkdir(exist_ok=True)
    (work / "logs" / f"{name}.{step_name}.log").write_text("\n".join(step.log))
    return {"status": status, "reason": reason, "commands": step.commands, "seconds": round(time.monotonic() - start)}


def table(state: dict, models: list[str], steps: list[str]) -> str:
    lines = ["| model | " + " | ".join(steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name in models:
        lines.append(f"| {name} | " + " | ".join(state.get(name, {}).get(s, {}).get("status", "-") for s in steps)
                     + " |")
    lines += ["", "Reasons (one line each) and commands (run in the work folder):", ""]
    for name in models:
        for s in steps:
            cell = state.get(name, {}).get(s)
            if cell:
                lines.append(f"- **{name} / {s}**: {cell['status']} ({cell['seconds']} s): {cell['reason']}  ")
                lines.append("  `" + "` ; `".join(cell["commands"]) + "`")
    return "\n".join(lines) + "\n"


def matrix(args) -> int:
    work = args.work.resolve()
    state_path = work / "matrix.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    models = args.models or sorted(Path(p).stem for p in glob.glob(str(work / "*.onnx")) if ".q." not in p)
    cluster = None

    def get_cluster():
        nonlocal cluster
        if cluster is None:
            from edgevit.distributed.local_cluster import LocalCluster

            cluster = LocalCluster()
            for _ in range(2):
                cluster.add_node("x86", wait=300)
        return cluster

    try:
        for name in models:
            for step_name in [] if args.render else args.steps:
                if step_name in state.get(name, {}) and not args.redo:
                    continue
                _say(f"{name} / {step_name}")
                cell = _cell(work, name, step_name, get_cluster)
                _say(f"{name} / {step_name}: {cell['status']} ({cell['seconds']} s) {cell['reason']}")
                # re-read before writing: another matrix run on the same folder may have recorded cells
                state = json.loads(state_path.read_text()) if state_path.exists() else {}
                state.setdefault(name, {})[step_name] = cell
                partial = state_path.with_suffix(".partial")
                partial.write_text(json.dumps(state, indent=1))
                partial.replace(state_path)
    finally:
        if cluster is not None:
            cluster.close()
    shown = [s for s in STEPS if any(s in state.get(m, {}) for m in models)]
    import edgevit

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    header = (f"# Every path on models outside the zoo\n\n`python tools/outside_zoo.py matrix --work {args.work}` "
              f"at commit {commit} (edgevit {edgevit.__version__}); ONNX files from `python tools/outside_zoo.py "
              f"export NAME ...` (timm, seeded random weights). Statuses: PASS; FAIL (a documented error: one "
              f"line, an exit code); TRACEBACK (a defect); SKIPPED (a step it needs did not run).\n\n")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    md = args.results.with_suffix(".md")
    notes = md.read_text().partition(NOTES)[2] if md.exists() else ""   # written by hand, kept across runs
    md.write_text(header + table(state, models, shown) + (f"\n{NOTES}{notes}" if notes else ""))
    args.results.with_suffix(".json").write_text(json.dumps({"commit": commit, "work": str(args.work),
                                                             "models": {m: state.get(m, {}) for m in models}},
                                                            indent=1))
    print(table(state, models, shown))
    return 0


def main() -> int:
    sys.path.insert(0, str(ROOT))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("export", "tflite"):
        p = sub.add_parser(command)
        p.add_argument("names", nargs="+")
        p.add_argument("--work", type=Path, default=Path("/tmp/outside"))
    p = sub.add_parser("matrix")
    p.add_argument("--models", nargs="+")
    p.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    p.add_argument("--redo", action="store_true", help="run the steps again even if recorded")
    p.add_argument("--render", action="store_true", help="run nothing: write the table and JSON of what is recorded")
    p.add_argument("--work", type=Path, default=Path("/tmp/outside"))
    p.add_argument("--results", type=Path, default=ROOT / "results" / "outside_zoo")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    if args.command == "export":
        export(args.names, args.work)
    elif args.command == "tflite":
        convert_tflite(args.names, args.work)
    else:
        return matrix(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

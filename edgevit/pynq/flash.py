"""``edgevit flash``: check a bundle, copy it and the board-side driver to a PYNQ board, run the self-test there.

Steps: the bundle is for this board; a bitstream comes with its ``.hwh``; every member matches its sha256; the
bitstream's header names the board's part; the board answers; copy the bundle plus ``edgevit/pynq`` (the
driver, numpy + pynq only) to ``~/edgevit-bundles/NAME``; run ``python -m edgevit.pynq.selftest`` there (it
loads the overlay and compares the accelerator's outputs with the golden model bit for bit).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import ArtifactError, ExecutionError, InputError, errors_by_name
from ..runtime import schema
from ..runtime.artifact import MEMBER_NAME
from ..targets import get_target
from . import manifest
from .bundle import check_part
from .selftest import MARK
from .transport import Transport

PACKAGE = Path(__file__).resolve().parents[1]
BOARD_FILES = ("__init__.py", "errors.py", "pynq/__init__.py", "pynq/board.py", "pynq/manifest.py",
               "pynq/driver.py", "pynq/numpy_graph.py", "pynq/selftest.py", "pynq/sim_device.py")
REMOTE_DIR = "edgevit-bundles"
# PYNQ 3.x images keep pynq in a venv whose profile script also sets the XRT environment; the PL needs root.
DEFAULT_PYTHON = "sudo -n bash -c '. /etc/profile.d/pynq_venv.sh && exec python3 \"$@\"' python3"
VIVADO_STEPS = ("needs Vivado, which is not installed here: in the HLS project run `vitis_hls -f hls.tcl`, then "
                "`vivado -mode batch -source vivado_bd.tcl`, then add the results with `edgevit bundle PROJECT -o "
                "BUNDLE --bitstream edgevit_bd/edgevit_bd.runs/impl_1/edgevit_wrapper.bit --hwh "
                "edgevit_bd/edgevit_bd.gen/sources_1/bd/edgevit/hw_handoff/edgevit.hwh`")


def check_bundle(bundle: Path, board: str) -> tuple[dict, list]:
    """Everything ``flash`` checks before touching the board; returns the configuration and report lines.

    Raises
    ------
    InputError
        If ``bundle`` is not a directory.
    ArtifactError
        Bundle for another board, bitstream without ``.hwh``, a member missing or not matching its sha256,
        a bitstream (or ``.hwh``) for another part.
    """
    bundle = Path(bundle)
    if not bundle.is_dir():
        raise InputError(f"no bundle at {bundle}: make one with `edgevit bundle PROJECT -o {bundle}`")
    fpga = get_target(board).require_fpga()
    try:
        cfg = json.loads((bundle / manifest.CONFIG).read_text())
    except (OSError, ValueError, RecursionError):
        cfg = manifest.load(bundle)   # raises with the reason
    if not isinstance(cfg, dict):
        raise ArtifactError(f"{bundle / manifest.CONFIG} is not an edgevit PYNQ bundle configuration")
    try:
        schema.check(cfg, _BUNDLE_SCHEMA)
    except schema.SchemaViolation as exc:
        raise ArtifactError(f"{bundle / manifest.CONFIG}: {exc}; remake it with `edgevit bundle`") from None
    _check_names(bundle, cfg)
    if cfg.get("board") != board:
        raise ArtifactError(f"bundle {bundle} was made for {cfg.get('board')}, not {board}")
    if cfg.get("bitstream") and not (cfg.get("hwh") and (bundle / cfg["hwh"]).is_file()):
        raise ArtifactError(f"bundle {bundle} has a bitstream but no .hwh: pynq needs the hardware handoff Vivado "
                            f"writes (edgevit_bd.gen/sources_1/bd/edgevit/hw_handoff/edgevit.hwh); add it with "
                            f"`edgevit bundle PROJECT -o {bundle} --bitstream F.bit --hwh F.hwh`")
    cfg = manifest.load(bundle)
    lines = [f"bundle {bundle}: {len(cfg['files'])} members match their sha256 ({cfg['model'] or 'model'}, "
             f"{cfg['selftest']['count']} self-test inputs)"]
    if cfg["bitstream"]:
        part = check_part(bundle / cfg["bitstream"], board, bundle / cfg["hwh"])
        lines.append(f"bitstream {cfg['bitstream']}: part {part} matches {board} ({fpga.part}); "
                     f"hardware handoff {cfg['hwh']}")
    else:
        lines.append(f"bitstream: MISSING -- {VIVADO_STEPS}")
    if cfg.get("cpu_tail"):
        lines.append(f"the model continues on the board's CPU after the accelerator ({len(cfg['cpu_layers'])} "
                     f"modules, numpy): {cfg['cpu_tail']}")
    return cfg, lines


_NAME_OR_NULL = schema.Either((schema.STRING, schema.NULL))
# The fields flash reads (the driver's own fields are the board's business): checked before any is used.
_BUNDLE_SCHEMA = schema.Record(
    required={"board": schema.STRING, "bitstream": _NAME_OR_NULL, "hwh": _NAME_OR_NULL,
              "selftest": schema.Record({"count": schema.int_in(0, 1 << 31)}, open=True),
              "files": schema.MapOf(schema.STRING, schema.matching(r"[0-9a-f]{64}", "a sha256 in hex"))},
    optional={"model": _NAME_OR_NULL, "cpu_tail": _NAME_OR_NULL, "cpu_layers": schema.ListOf(schema.ANY)},
    open=True)


def _check_names(bundle: Path, cfg: dict) -> None:
    """Every file ``bundle.json`` names must be a plain relative name inside the bundle (no ``..``, no link)."""
    names = [*cfg["files"], *(cfg.get(k) for k in ("bitstream", "hwh", "cpu_tail"))]
    inside = bundle.resolve()
    for name in names:
        if not name:
            continue
        path = bundle / name
        if (not re.fullmatch(MEMBER_NAME, name) or path.is_symlink()
                or not path.resolve().is_relative_to(inside)):
            raise ArtifactError(f"bundle {bundle}: {manifest.CONFIG} names '{name}', which is not a file inside the "
                                "bundle: refused")


def selftest_command(name: str, remote_python: str, timeout_s: float, count: int | None) -> str:
    """The shell command run on the board."""
    args = ["-m", "edgevit.pynq.selftest", ".", "--timeout", str(timeout_s), *(["--count", str(count)] if count else [])]
    return f"cd {shlex.quote(f'{REMOTE_DIR}/{name}')} && {remote_python} {shlex.join(args)}"


def flash(bundle: Path, board: str, transport: Transport, dry_run: bool = False,
          remote_python: str = DEFAULT_PYTHON, timeout_s: float = 10.0, count: int | None = None,
          echo=print) -> dict | None:
    """Check ``bundle``, copy it to the board behind ``transport``, load the overlay and run the self-test.

    Returns
    -------
    dict or None
        The board's self-test result, or None for a dry run (which only prints the plan).

    Raises
    ------
    EdgevitError
        See :func:`check_bundle`; also ExecutionError (board unreachable, self-test did not run) and
        VerificationError (the board's outputs differ from the golden model).
    """
    bundle = Path(bundle).resolve()
    cfg, lines = check_bundle(bundle, board)
    for line in lines:
        echo(line)
    command = selftest_command(bundle.name, remote_python, timeout_s, count)
    plan = [f"check that {transport} answers",
            f"copy the bundle and the board-side driver (edgevit/pynq, {len(BOARD_FILES)} files) to "
            f"{transport}:{REMOTE_DIR}/{bundle.name}",
            f"run there: {command}"]
    if dry_run:
        for step in plan:
            echo(f"would {step}")
        echo("dry run: nothing was copied or run" + ("" if cfg["bitstream"] else
                                                    "; a real flash needs the bitstream first (Vivado)"))
        return None
    if not cfg["bitstream"]:
        raise ArtifactError(f"bundle {bundle} has no bitstream: it {VIVADO_STEPS}")
    transport.check()
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / bundle.name
        shutil.copytree(bundle, stage)
        for rel in BOARD_FILES:
            (stage / "edgevit" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE / rel, stage / "edgevit" / rel)
        transport.put(stage, REMOTE_DIR)
    echo(f"copied to {transport}:{REMOTE_DIR}/{bundle.name}; running the self-test")
    try:
        proc = transport.run(command, timeout_s=120 + timeout_s * cfg["selftest"]["count"])
    except subprocess.TimeoutExpired:
        raise ExecutionError(f"the self-test on {transport} did not finish in time") from None
    found = [line for line in proc.stdout.splitlines() if line.startswith(MARK + " ")]
    if not found:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise ExecutionError(f"the self-test did not run on {transport} (exit {proc.returncode}): {tail}")
    result = json.loads(found[-1][len(MARK) + 1:])
    if not result["ok"]:
        raise errors_by_name(result["error_type"])(f"self-test on {board} failed: {result['error']}")
    echo(f"self-test on {board} ({result['device']}): {result['inputs']} inputs, {result['mismatches']} output "
         f"words differ from the golden model; first input -> class {result['first_argmax']}"
         + (f" (CPU part included: max |error| vs the float model {result['cpu_tail_error']:.3g})"
            if "cpu_tail_error" in result else "") + "; "
         f"{result['ms_per_inference']:.2f} ms per inference")
    return result

"""An FPGA node's stage: the accelerator part of a PYNQ bundle, run by the board-side stage worker.

``edgevit node --fpga BUNDLE`` makes a node whose one stage is the bundle's accelerator part: the model from its
input up to the tensor where the accelerator stops (``cpu_tail.json``'s input, or the model's output). The
node keeps TVM RPC, the tracker and the data plane like any node; the accelerator runs in
:mod:`edgevit.pynq.stage_worker`, a child process in the Python that has pynq (pynq pins numpy<2, so off-board
it is the venv of ``tools/setup_pynq_env.sh``). With ``simulate`` the g++ C-simulation of the bundle's own
``top.cpp`` stands in for the programmable logic, and the node says so in its description.

Board side: stdlib and numpy only (the C-simulation library is built by the host-side ``simlib`` when asked).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, EdgevitError, ExecutionError, ToolMissingError, errors_by_name
from ..settings import PACKAGE_PARENT

PACKAGE_ROOT = PACKAGE_PARENT   # for the worker's sys.path


def bundle_digest(bundle: Path) -> str:
    """The sha256 of a bundle's ``bundle.json``, which holds the sha256 of every other member: the bundle's
    identity in plans."""
    try:
        return hashlib.sha256((Path(bundle) / "bundle.json").read_bytes()).hexdigest()
    except OSError as exc:
        raise ArtifactError(f"{bundle} is not an edgevit PYNQ bundle ({exc}): make one with `edgevit bundle`") \
            from None


class AcceleratorStage:
    """The accelerator part of ``bundle`` behind a worker process; call it like a compiled model.

    Parameters
    ----------
    bundle
        A bundle directory (``edgevit bundle``), as flashed on the board.
    python
        The Python that has pynq and runs the worker (a board's own; off-board, the pynq venv's).
    simulate
        Run the C-simulation instead of the programmable logic (off-board stand-in; labelled so).
    selftest
        How many of the bundle's self-test inputs the worker checks bit-exactly before serving.
    """

    def __init__(self, bundle: Path, python: str | None = None, simulate: bool = False, selftest: int = 2,
                 timeout_s: float = 120.0):
        self.bundle = Path(bundle).resolve()
        self.digest = bundle_digest(self.bundle)
        try:
            self.config = json.loads((self.bundle / "bundle.json").read_text())
        except ValueError as exc:
            raise ArtifactError(f"{self.bundle}/bundle.json is not JSON ({exc})") from None
        self.python, self.simulate, self.checks, self.timeout_s = python or sys.executable, simulate, selftest, timeout_s
        self.sim_library = None
        if simulate:
            from ..pynq import simlib   # host tooling (g++): only an off-board stand-in node builds this

            self.sim_library = simlib.build(self.bundle)
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}
        self.lock = threading.Lock()

    def describe(self) -> dict:
        """What the node publishes about its accelerator (``edgevit nodes``, plans)."""
        estimate = self.config.get("estimate") or {}
        return {"bundle_sha256": self.digest, "board": self.config.get("board"), "model": self.config.get("model"),
                "device": ("C-simulation of the bundle's top.cpp (off-board stand-in for the programmable logic)"
                           if self.simulate else "programmable logic"),
                "estimate_ms": estimate.get("latency_ms")}

    def start(self) -> dict:
        """Start the worker (once): it self-tests the accelerator, then reports shapes; returns the model meta."""
        if self.proc is None or self.proc.poll() is not None:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PACKAGE_ROOT),
                                                                             os.environ.get("PYTHONPATH")]))}
            if self.sim_library is not None:
                env["EDGEVIT_PYNQ_SIM_LIB"] = str(self.sim_library)
            try:
                self.proc = subprocess.Popen([self.python, "-m", "edgevit.pynq.stage_worker", str(self.bundle),
                                              "--selftest", str(self.checks), "--timeout", str(self.timeout_s)],
                                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
            except OSError as exc:
                raise ToolMissingError(f"cannot start the accelerator worker with {self.python}: {exc}") from None
            tag, payload = self._read()
            if tag != b"R":
                self.close()
                raise self._error(payload, "the accelerator worker did not start")
            self.ready = json.loads(payload)
        return self.meta()

    def meta(self) -> dict:
        """The stage's model description in the shape a compiled artifact's metadata has."""
        return {"model": f"{self.config.get('model')} (accelerator part)", "target": self.config.get("board"),
                "inputs": [{"name": "input", "shape": self.ready["input_shape"], "dtype": "float32"}],
                "outputs": [{"name": self.ready.get("output") or "output", "shape": self.ready["output_shape"],
                             "dtype": "float32"}],
                "device": self.ready.get("device"), "selftest": self.ready.get("selftest")}

    def __call__(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """One inference on the accelerator: ``[input]`` -> ``[part output]``."""
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arrays[0]), allow_pickle=False)
        with self.lock:
            if self.proc is None or self.proc.poll() is not None:
                raise ExecutionError("the accelerator worker is not running (it exited): restart the node")
            try:
                self.proc.stdin.write(struct.pack("<Q", buf.tell()) + buf.getvalue())
                self.proc.stdin.flush()
            except OSError as exc:
                raise ExecutionError(f"the accelerator worker stopped: {exc}") from None
            tag, payload = self._read()
        if tag != b"A":
            raise self._error(payload, "the accelerator failed")
        return [np.load(io.BytesIO(payload), allow_pickle=False)]

    def _read(self) -> tuple[bytes, bytes]:
        head = self.proc.stdout.read(9)
        if len(head) < 9:
            code = self.proc.wait()
            return b"E", json.dumps({"error": f"the accelerator worker exited (code {code}); its stderr says "
                                              "why", "kind": "ExecutionError"}).encode()
        tag, (length,) = head[:1], struct.unpack("<Q", head[1:])
        return tag, self.proc.stdout.read(length)

    @staticmethod
    def _error(payload: bytes, context: str) -> EdgevitError:
        try:
            doc = json.loads(payload)
            return errors_by_name(str(doc.get("kind")))(f"{context}: {doc.get('error')}")
        except (ValueError, AttributeError):
            return ExecutionError(f"{context}: unreadable reply from the worker")

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

"""Board-side driver of the generated accelerator (``edgevit_top``): the same code on a board and off-board.

The accelerator reads its layer program and weights from DDR, so a run is: load the overlay, allocate the
five buffers of the register map with ``pynq.allocate``, copy ``program.bin``/``params.bin`` in and flush,
write the buffers' physical addresses into the AXI-lite registers, then per inference write the input, flush,
set ``ap_start``, poll ``ap_done`` with a timeout, invalidate and read the output. Quantising the input and
dequantising the output run on the ARM CPU in numpy, and so does the part of the model after the
accelerator's, if any (``cpu_tail.json``, run by :mod:`.numpy_graph`).
Imports numpy and pynq (through :mod:`.board`) only.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..errors import ArtifactError, ExecutionError, InputError
from . import board, manifest, numpy_graph

PORTS = ("program", "params", "arena", "input", "output")


class Accelerator:
    """An ``edgevit_top`` instance on a board (or on :class:`~edgevit.pynq.sim_device.SimDevice`).

    Parameters
    ----------
    bundle : Path
        A bundle directory (``edgevit bundle``); its hashes are checked first.
    device : pynq.Device, optional
        The device to load the overlay on; None is pynq's active device (the board's PL).
    timeout_s : float
        How long :meth:`run_raw` waits for ``ap_done`` before giving up.
    config : dict, optional
        The bundle's configuration as :func:`.manifest.load` returned it (hashes already checked); read and
        checked here if not given.
    bitstream : Path, optional
        The overlay to load instead of the bundle's (off-board: the simulated device's stand-in, for bundles
        made without Vivado).
    """

    def __init__(self, bundle: Path, device=None, timeout_s: float = 10.0, config: dict | None = None,
                 bitstream: Path | None = None):
        self.bundle = Path(bundle)
        self.config = cfg = config if config is not None else manifest.load(self.bundle)
        if bitstream is None and not cfg.get("bitstream"):
            raise ArtifactError(f"bundle {self.bundle} has no bitstream: build it with Vivado (hls.tcl, then "
                                f"vivado_bd.tcl) and add it with `edgevit bundle PROJECT --bitstream F.bit --hwh F.hwh`")
        self.timeout_s = timeout_s
        self.regs = {name: int(off, 0) for name, off in cfg["registers"].items()}
        self.overlay = board.load_overlay(bitstream or self.bundle / cfg["bitstream"], device)
        self.ip = board.ip_core(self.overlay, cfg["ip"])
        # The accelerator reads and writes the int16 buffers in whole AXI beats (little-endian words, the bytes
        # of an int16 array): each is allocated to alloc_elements, its data in the first `elements` words.
        self.words = {p: cfg["buffers"][p]["elements"] for p in PORTS}
        self.buffers = {p: board.allocate(cfg["buffers"][p].get("alloc_elements", self.words[p]),
                                          cfg["buffers"][p]["dtype"], device) for p in PORTS}
        for buf in self.buffers.values():
            buf[:] = 0
        for port in ("program", "params"):
            buf, spec = self.buffers[port], cfg["buffers"][port]
            data = np.fromfile(self.bundle / spec["file"], dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
            if data.size != self.words[port]:
                raise ArtifactError(f"{spec['file']} holds {data.size} words, the register map says "
                                    f"{self.words[port]}")
            buf[:data.size] = data
        for buf in self.buffers.values():
            buf.flush()   # the caches hold what we wrote; the accelerator reads DDR
        self.tail = numpy_graph.load(self.bundle, cfg["cpu_tail"], manifest.TAIL_NPZ) if cfg.get("cpu_tail") else None
        self.program_registers()

    def program_registers(self) -> dict:
        """Write each buffer's physical address into its 64-bit register (low word, then high word).

        Returns
        -------
        dict
            Register offset -> the 32-bit value written, for every register written.
        """
        written = {self.regs["GIE"]: 0}   # polled, not interrupt driven
        for port in PORTS:
            addr, off = int(self.buffers[port].device_address), self.regs[port.upper()]
            written[off], written[off + 4] = addr & 0xFFFFFFFF, addr >> 32
        for off, value in written.items():
            self.ip.write(off, value)
        return written

    def run_raw(self, x_raw) -> np.ndarray:
        """One inference on raw fixed-point input words; returns the raw output words (int64).

        Raises
        ------
        InputError
            If ``x_raw`` has the wrong number of elements or values outside 16 bits.
        ExecutionError
            If the accelerator is busy or does not signal ``ap_done`` within ``timeout_s``.
        """
        x = np.asarray(x_raw, dtype=np.int64).ravel()
        inp, out = self.buffers["input"], self.buffers["output"]
        n_in, n_out = self.words["input"], self.words["output"]
        if x.size != n_in:
            raise InputError(f"the accelerator takes {n_in} input words, got {x.size}")
        if x.size and (x.min() < -(1 << 15) or x.max() >= 1 << 15):
            raise InputError("raw inputs must fit 16-bit words")
        ctrl = self.regs["CTRL"]
        if not self.ip.read(ctrl) & manifest.CTRL_IDLE:
            raise ExecutionError("the accelerator is not idle (a previous run did not finish): reload the overlay")
        inp[:n_in] = x
        inp.flush()
        self.ip.write(ctrl, manifest.CTRL_START)
        deadline = time.monotonic() + self.timeout_s
        while not self.ip.read(ctrl) & manifest.CTRL_DONE:     # ap_done clears on read
            if time.monotonic() > deadline:
                raise ExecutionError(f"the accelerator did not finish within {self.timeout_s} s (no ap_done)")
        out.invalidate()   # drop stale cache lines before reading what the accelerator wrote
        return np.array(out[:n_out], dtype=np.int64)

    def quantize(self, x) -> np.ndarray:
        """Float input (channels-last, the accelerator's input shape) to raw words: round half up, saturate (an
        int8 input: ``round_half_even(x / scale)`` clipped to int8, minus the zero point)."""
        spec = self.config["buffers"]["input"]
        x = np.asarray(x, dtype=np.float64)
        if x.size != spec["elements"]:
            raise InputError(f"the model takes input of shape {spec['shape']} (channels-last), got {x.shape}")
        if "int8" in spec:   # an int8 (QDQ) model: onnxruntime's QuantizeLinear, stored minus the zero point
            scale, zp = np.float32(spec["int8"]["scale"]), int(spec["int8"]["zero_point"])
            q = np.rint(x.ravel().astype(np.float32) / scale) + zp
            return np.clip(q, -128, 127).astype(np.int64) - zp
        w, i = spec["format"]
        raw = np.floor(x.ravel() * 2.0 ** (w - i) + 0.5)
        return np.clip(raw, -(1 << (w - 1)), (1 << (w - 1)) - 1).astype(np.int64)

    def predict(self, x) -> np.ndarray:
        """Float input (channels-last, the accelerator's input shape) -> the model's float output."""
        return self.finish(self.run_raw(self.quantize(x)))

    def finish(self, raw) -> np.ndarray:
        """The accelerator's raw output -> the model's float output (dequantise, then the CPU part, if any).

        Raises
        ------
        ExecutionError
            If the model continues after the accelerator but the bundle has no CPU part for it.
        """
        if self.tail is None and self.config.get("cpu_layers"):
            raise ExecutionError(f"this model continues after the accelerator ({self.config['cpu_layers'][0]}"
                                 f", ...) but the bundle has no CPU part: rebuild it with the model")
        y = self.part_output(raw)
        if self.tail is None:
            return y
        graph, weights = self.tail
        return numpy_graph.run(graph, weights, {graph["input"]: y})[0]

    def part_output(self, raw) -> np.ndarray:
        """The accelerator's raw output, dequantised, in the layout of the model's tensor it equals
        (:func:`part_output`)."""
        return part_output(raw, self.config["buffers"]["output"], self.tail[0] if self.tail is not None else None)


def part_output(raw, spec: dict, tail: dict | None) -> np.ndarray:
    """Raw accelerator output words -> float, in the layout of the model's tensor they equal.

    With a CPU part (``tail``, from ``cpu_tail.json``) that is the part's input, the tensor of the model's ONNX
    graph where the accelerator stops (e.g. NCHW where the accelerator is channels-last); without, the model's
    output. A pipeline that puts the accelerator part on an FPGA node sends this tensor on to the next node.
    """
    if "int8" in spec:   # q - zero point of an int8 tensor: DequantizeLinear's (q - zero point) * scale
        y = (np.asarray(raw, np.float32) * np.float32(spec["int8"]["scale"])).astype(np.float64).reshape(spec["shape"])
    else:
        w, i = spec["format"]
        y = np.asarray(raw, dtype=np.float64).reshape(spec["shape"]) / 2.0 ** (w - i)
    if tail is None:
        return y
    y = y.transpose(tail["transpose"]) if tail["transpose"] else y
    return y.reshape(tail["input_shape"])

"""The off-board test bench: a ``pynq.Device`` whose memory is host memory and whose accelerator is the C-sim.

Following pynq's own tests (``tests/mock_devices.py``), :class:`SimDevice` subclasses ``pynq.Device`` so that
``pynq.Overlay``, ``pynq.allocate``, ``PynqBuffer.flush/invalidate`` and the IP's ``read``/``write`` are
pynq's real code; only the hardware underneath is simulated:

* memory: each buffer is host memory (what the CPU sees, through its caches) plus a separate "DDR" copy (what
  the accelerator sees). ``flush`` copies CPU -> DDR and ``invalidate`` DDR -> CPU, so a driver that forgets
  either computes on stale data here, as it would on a board;
* registers: the AXI-lite block of the bundle's register map. Writes outside it raise; every write is logged;
  ``ap_done`` clears when CTRL is read, as in Vitis HLS's ``s_axi_control``;
* the accelerator: writing ``ap_start`` runs the generated ``edgevit_top`` (g++ C-simulation built as a shared
  library by :func:`edgevit.pynq.simlib.build`) on the DDR copies at the addresses in the registers.

What it does not model: the ``.hwh`` (pynq parses Vivado's file on a board; here the IP's description comes
from the bundle's register map), timing, interrupts, and AXI bursts.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ..errors import ExecutionError
from . import board, manifest
from .driver import PORTS

_pynq = board.pynq_module()

IP_BASE = 0x4000_0000       # where Vivado's address automation puts the first M_AXI_GP0 slave on Zynq-7000
IP_RANGE = 0x1_0000
DDR_BASE = 0x1600_0000      # inside PYNQ-Z2's CMA region, as pynq.allocate returns there
FAULTS = ("hang", "corrupt")


class SimDevice(_pynq.Device):
    """A simulated PYNQ board running one bundle's accelerator.

    Parameters
    ----------
    config : dict
        The bundle's ``bundle.json`` (register map, IP name, buffers).
    library : Path
        The C-simulation shared library (:func:`edgevit.pynq.simlib.build`).
    fault : str, optional
        ``"hang"`` (ap_done never comes) or ``"corrupt"`` (one output bit flipped): a broken accelerator.
    """

    def __init__(self, config: dict, library: Path, fault: str | None = None, tag: str = "edgevit_sim"):
        super().__init__(tag)
        if fault not in (None, *FAULTS):
            raise ValueError(f"unknown fault {fault!r}: use one of {FAULTS}")
        self.capabilities = {"REGISTER_RW": True}
        self.config, self.fault = config, fault
        self.lib = ctypes.CDLL(str(library))
        p16, p32, n = ctypes.POINTER(ctypes.c_int16), ctypes.POINTER(ctypes.c_int32), ctypes.c_long
        self.lib.edgevit_sim_run.argtypes = [p32, n, p16, n, p16, n, p16, n, p16, n]
        self.lib.edgevit_sim_run.restype = ctypes.c_int
        offsets = {name: int(off, 0) for name, off in config["registers"].items()}
        self.ports = {name: offsets[name.upper()] for name in PORTS}
        self.valid = {offsets[n] for n in ("CTRL", "GIE", "IER", "ISR")}
        self.valid |= {off + k for off in self.ports.values() for k in (0, 4)}
        self.regs = dict.fromkeys(self.valid, 0)
        self.regs[offsets["CTRL"]] = manifest.CTRL_IDLE
        self.ctrl = offsets["CTRL"]
        self.writes, self.flushes, self.invalidates, self.downloads, self.runs = [], [], [], [], 0
        self._ddr, self._next = {}, DDR_BASE

    # --- what pynq.Overlay asks of a device ------------------------------------------------------------
    def get_bitfile_metadata(self, bitfile_name):
        """The overlay's description: the one IP of the register map (a board's pynq parses the ``.hwh``)."""
        hwh = Path(bitfile_name).with_suffix(".hwh")
        if not hwh.is_file():
            raise RuntimeError(f"Unable to find metadata for bitstream ({hwh} is missing)")
        ip = {"phys_addr": IP_BASE, "addr_range": IP_RANGE, "type": "xilinx.com:hls:edgevit_top:1.0",
              "fullpath": self.config["ip"], "registers": {}, "parameters": {}, "interrupts": {}, "gpio": {},
              "state": None, "mem_id": "s_axi_control"}
        return SimpleNamespace(ip_dict={self.config["ip"]: ip}, mem_dict={}, gpio_dict={}, interrupt_pins={},
                               interrupt_controllers={}, hierarchy_dict={}, clock_dict={}, systemgraph=None)

    def download(self, bitstream, parser=None):
        """Stand in for programming the PL: reset the registers to idle and record the bitstream."""
        self.downloads.append(bitstream.bitfile_name)
        self.regs = dict.fromkeys(self.valid, 0)
        self.regs[self.ctrl] = manifest.CTRL_IDLE
        self.post_download(bitstream, parser)

    # --- memory --------------------------------------------------------------------------------------
    def allocate(self, shape, dtype, **kwargs):
        """A cacheable ``PynqBuffer`` in host memory with a page-aligned "physical" address and a DDR copy."""
        buf = _pynq.buffer.PynqBuffer(shape, dtype, device=self, bo=len(self._ddr) + 1, coherent=False,
                                      device_address=self._next)
        self._ddr[buf.bo] = (self._next, np.zeros(buf.nbytes, np.uint8))
        self._next += (buf.nbytes + 0xFFF) & ~0xFFF    # page-aligned, like CMA allocations
        return buf

    def flush(self, bo, offset, vaddr, length):
        """Write CPU-side bytes back to the DDR copy."""
        self.flushes.append((bo, offset, length))
        ctypes.memmove(self._ddr[bo][1].ctypes.data + offset, vaddr, length)

    def invalidate(self, bo, offset, vaddr, length):
        """Refresh CPU-side bytes from the DDR copy."""
        self.invalidates.append((bo, offset, length))
        ctypes.memmove(vaddr, self._ddr[bo][1].ctypes.data + offset, length)

    def ddr(self, address: int, nbytes: int) -> np.ndarray:
        """The DDR bytes ``[address, address + nbytes)``, which must lie inside one allocated buffer."""
        for base, mem in self._ddr.values():
            if base <= address and address + nbytes <= base + mem.size:
                return mem[address - base:address - base + nbytes]
        raise ExecutionError(f"the accelerator would access unallocated memory at 0x{address:x} (+{nbytes} bytes)")

    # --- AXI-lite registers ---------------------------------------------------------------------------
    def read_registers(self, address, length):
        """A 32-bit AXI-lite read (``ap_done`` clears when CTRL is read)."""
        off = address - IP_BASE
        if length != 4 or off not in self.valid:
            raise ExecutionError(f"read of {length} bytes at register offset 0x{off:x}: not in the register map")
        value = self.regs[off]
        if off == self.ctrl:
            self.regs[off] &= ~manifest.CTRL_DONE     # clear on read
        return int(value).to_bytes(4, "little")

    def write_registers(self, address, data):
        """A 32-bit AXI-lite write; ``ap_start`` on an idle accelerator runs it (synchronously)."""
        off = address - IP_BASE
        if len(data) != 4 or off not in self.valid:
            raise ExecutionError(f"write of {len(data)} bytes at register offset 0x{off:x}: not in the register map")
        value = int.from_bytes(bytes(data), "little")
        self.writes.append((off, value))
        if off != self.ctrl:
            self.regs[off] = value
        elif value & manifest.CTRL_START and self.regs[off] & manifest.CTRL_IDLE:
            self.regs[off] = manifest.CTRL_START   # running: not idle, not done
            if self.fault != "hang":
                self._run()
                self.regs[off] = manifest.CTRL_DONE | manifest.CTRL_IDLE | 0x8   # done, idle, ready

    def _address(self, port: str) -> int:
        off = self.ports[port]
        return self.regs[off] | self.regs[off + 4] << 32

    def _run(self) -> None:
        """One ``edgevit_top`` call on the DDR buffers the registers point at (sizes from the program header)."""
        names = self.config["program_header"]
        head = dict(zip(names, self.ddr(self._address("program"), 4 * len(names)).view("<i4").tolist()))
        # The int16 buffers as the accelerator reads them: whole beats of the register map's beat_bits.
        beat = {p: self.config["buffers"][p].get("beat_bits", 16) // 16 for p in PORTS}
        sizes = {"program": 4 * (len(names) + head["layers"] * head["desc_words"])}
        sizes.update({p: 2 * -(-head[f"{p}_words"] // beat[p]) * beat[p] for p in ("params", "arena", "input",
                                                                                  "output")})
        mem = {port: self.ddr(self._address(port), n) for port, n in sizes.items()}
        p16 = ctypes.POINTER(ctypes.c_int16)
        args = [mem["program"].ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), sizes["program"] // 4]
        for port in ("params", "arena", "input", "output"):
            args += [mem[port].ctypes.data_as(p16), sizes[port] // 2]
        if self.lib.edgevit_sim_run(*args) != 0:
            raise ExecutionError("the C-simulated accelerator rejected its layer program (bad magic or size)")
        if self.fault == "corrupt":
            mem["output"][0] ^= 1
        self.runs += 1


def stand_in_overlay(folder: Path, part: str) -> Path:
    """Write a stand-in for Vivado's outputs into ``folder`` (:func:`.manifest.write_stand_in_bit` and its
    ``.hwh``) and return the ``.bit``. Enough for ``pynq.Overlay`` on :class:`SimDevice`, which takes the IP's
    description from the register map. Used off-board for bundles made without Vivado."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    manifest.write_stand_in_hwh(folder / "edgevit_stand_in.hwh", part)
    return manifest.write_stand_in_bit(folder / "edgevit_stand_in.bit", part)


def from_env(config: dict) -> SimDevice | None:
    """A :class:`SimDevice` if ``EDGEVIT_PYNQ_SIM_LIB`` names a C-simulation library (off-board), else None.

    ``EDGEVIT_PYNQ_SIM_FAULT`` (``hang`` / ``corrupt``) makes it a broken accelerator, for tests.
    """
    library = os.environ.get("EDGEVIT_PYNQ_SIM_LIB")
    if not library:
        return None
    return SimDevice(config, Path(library), os.environ.get("EDGEVIT_PYNQ_SIM_FAULT") or None)

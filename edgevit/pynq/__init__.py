"""PYNQ boards: the board-side driver of the generated accelerator, bundles, and ``edgevit flash``.

Board side (runs on the board's ARM CPU; imports numpy and, through :mod:`.board` only, ``pynq`` -- never
torch, onnx or TVM): :mod:`.manifest` (bundle hashes and bitstream part checks), :mod:`.board` (the one
adapter around ``pynq``), :mod:`.driver` (overlay, buffers, registers, start/wait), :mod:`.numpy_graph` (the
model's part after the accelerator, in numpy), :mod:`.selftest` (``python -m edgevit.pynq.selftest BUNDLE``)
and :mod:`.sim_device`, the off-board test bench: a ``pynq.Device`` whose memory is host memory and whose
accelerator is the g++ C-simulation.

Host side: :mod:`.bundle` (HLS project + bitstream -> bundle), :mod:`.cpu_tail` (cuts the CPU part out of the
model's ONNX graph), :mod:`.simlib` (the C-simulation as a shared library), :mod:`.transport` (SSH, or a local
directory standing in for the board), :mod:`.flash` and :mod:`.cli`.
The host may import the board side, never the other way round.
"""

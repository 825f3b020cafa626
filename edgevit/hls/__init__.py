"""The FPGA/HLS backend: fixed-point kernels in ``hw/include/edgevit``, their numpy golden model, and the
generator of Vitis HLS projects.

Data flows one way: torch module tree -> :mod:`.torch_import` (a :class:`.program.Program` of accelerator
layers, unsupported tail left to the ARM CPU) -> :func:`.program.calibrate` (a format per tensor) ->
:mod:`.estimator` (lanes that fit the board) -> :mod:`.codegen` (the project) -> :mod:`.csim` (g++
C-simulation, checked bit for bit against :mod:`.golden`). :mod:`.project` strings these together and
:mod:`.cli` is the ``edgevit hls`` command.
"""

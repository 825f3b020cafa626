"""The FPGA/HLS backend: runtime-configured fixed-point units in ``hw/include/edgevit``, their numpy golden
model, and the generator of Vitis HLS projects (a layer program for one shared-unit top function).

Data flows one way: torch module tree -> :mod:`.torch_import` (a :class:`.program.Program` of accelerator
layers, unsupported tail left to the ARM CPU; MoE-ViT task builds via :mod:`.moe_import`) -> :func:`.program.calibrate` (a format per tensor) ->
:mod:`.estimator` (lanes that fit the board) -> :mod:`.layer_table` (arena layout, packed weights, one
descriptor per layer) -> :mod:`.codegen` (the project: the shared-unit top, program.bin, register map) ->
:mod:`.csim` (g++ C-simulation, checked bit for bit against :mod:`.golden`). :mod:`.project` strings these
together and :mod:`.cli` is the ``edgevit hls`` command.
"""

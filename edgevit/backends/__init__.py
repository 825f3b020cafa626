"""Compiler backends: one module per compiler path (``tvm_compiler`` for CPUs; ``edgevit.hls`` for FPGAs)."""

"""edgevit: edge runtime and hardware code generation for lightweight hybrid vision transformers.

This module stays import-light on purpose: the board-side runner (``edgevit.runtime``) is executed on
devices, and under qemu here, where neither torch nor TVM's compiler is available.
"""

__version__ = "0.1.0"

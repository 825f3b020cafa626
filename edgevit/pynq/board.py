"""The one module that imports ``pynq`` (lazily, so the rest of edgevit works without it).

pynq 4.0 pins ``numpy<2`` and ``grpcio==1.64.0``; edgevit's host environment uses numpy 2, so pynq lives in
the board's own Python (the PYNQ image) and, for the off-board tests, in a separate venv
(``tools/setup_pynq_env.sh``). Everything pynq's API offers that edgevit uses goes through here.
"""

from __future__ import annotations

from ..errors import ToolMissingError


def pynq_module():
    """Import and return ``pynq``.

    Raises
    ------
    ToolMissingError
        If pynq is not installed in this Python.
    """
    try:
        import pynq
    except ImportError as e:
        raise ToolMissingError(f"the PYNQ driver needs pynq ({e}): run it on a PYNQ image, or off-board in the "
                               f"venv made by tools/setup_pynq_env.sh") from None
    return pynq


def load_overlay(bitfile: str, device=None):
    """Load (download) the overlay ``bitfile``; pynq reads the ``.hwh`` beside it.

    ``device`` None means pynq's active device (the board's programmable logic).
    """
    return pynq_module().Overlay(str(bitfile), device=device)


def ip_core(overlay, name: str):
    """The driver object of IP ``name`` in ``overlay`` (its ``read``/``write`` reach the AXI-lite registers)."""
    return getattr(overlay, name)


def allocate(elements: int, dtype: str, device=None):
    """A physically contiguous buffer the accelerator can reach (``.device_address``, ``.flush()``,
    ``.invalidate()``), on ``device`` or pynq's active device."""
    return pynq_module().allocate(shape=(elements,), dtype=dtype, target=device)

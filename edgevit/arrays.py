"""Reading one array from a user's ``.npy`` file: one clear line for everything that is not one."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError


def load_npy(path: Path | str, what: str, hint: str) -> np.ndarray:
    """The array in ``path`` (no pickles).

    Raises
    ------
    InputError
        Unreadable, not an array file, or an ``.npz`` archive (``hint`` says what to give instead); the message
        names the file as ``what``.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read {what} {path}: {str(exc)[:200]}") from None
    if not isinstance(array, np.ndarray):
        array.close()
        raise InputError(f"{what} {path} is an .npz archive: {hint}")
    return array

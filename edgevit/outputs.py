"""Where edgevit may write: checks made before a command spends time, so a bad ``-o`` costs nothing.

An output must name a file (not a directory), must not be one of the command's inputs (``-o model.onnx`` would
destroy the model), must not be a device or other special file, must not be on a virtual file system
(``/proc``, ``/sys``, ``/dev``) and its folder must be writable.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import OutputError

VIRTUAL = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_output(path: Path | str, protect=(), what: str = "output") -> Path:
    """Return ``path`` as a ``Path`` if it is a file edgevit may write.

    Parameters
    ----------
    path
        The output the user named.
    protect
        Input files that must not be overwritten (the model, the artifact, input tensors).
    what
        How the message names the output (``-o``, ``--output``).

    Raises
    ------
    OutputError
        Naming the reason and what to do instead.
    """
    text, path = str(path), Path(path)
    if not text or text.endswith(os.sep) or path.is_dir():
        raise OutputError(f"{what} '{text}' is a directory: name a file in it, e.g. {path / 'out'}")
    resolved = path.resolve()
    for source in protect:
        source = Path(source)
        if source.exists() and (resolved == source.resolve() or (path.exists() and os.path.samefile(path, source))):
            raise OutputError(f"{what} '{text}' is the input {source}: writing it would destroy the input; "
                              "choose another name")
    for root in VIRTUAL:
        if resolved == root or resolved.is_relative_to(root):
            raise OutputError(f"{what} '{text}' is under {root}, a virtual file system: choose a path on disk")
    if path.exists() and not path.is_file():
        raise OutputError(f"{what} '{text}' exists and is not a regular file: choose another name")
    folder = resolved.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} '{text}': {folder} is a file, not a directory")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"{what} '{text}': no permission to write in {folder}")
    return path

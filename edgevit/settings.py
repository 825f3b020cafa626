"""The few environment variables edgevit reads, in one place.

``EDGEVIT_CACHE``  where prepared things live (exported ONNX, aarch64 sysroot, runtime bundles);
                   default ``~/.cache/edgevit``.
``EDGEVIT_SEED``   seed for zoo weights and random inputs (default 0), so results repeat.
``EDGEVIT_TARGETS`` a folder of board files to use instead of edgevit's own ``targets/``.

Where edgevit's data lives (:func:`data_path`): the board files (``targets/``), the HLS headers, templates and
stubs (``hw/``) and the model definitions timm lacks (``models/``) are the repository's top-level folders; the
package reaches them through ``edgevit/_data/``, which holds symlinks to them in a checkout and their copies in
an installed wheel (package data), so the same code works from both.
"""

import os
from pathlib import Path


def getenv(name: str, default: str) -> str:
    """Return environment variable ``EDGEVIT_<name>`` or ``default``."""
    return os.environ.get(f"EDGEVIT_{name}", default)


def cache_dir(*parts: str) -> Path:
    """Return (and create) a folder under edgevit's cache directory."""
    path = Path(getenv("CACHE", str(Path.home() / ".cache" / "edgevit"))).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed() -> int:
    """The seed used for zoo weights and generated inputs."""
    return int(getenv("SEED", "0"))


PACKAGE_DIR = Path(__file__).resolve().parent
# The folder that holds the ``edgevit`` package: what a child process (a node, a qemu Python, a board-side
# worker) puts on its PYTHONPATH to import this same edgevit.
PACKAGE_PARENT = PACKAGE_DIR.parent


def data_path(*parts: str) -> Path:
    """A file or folder of edgevit's data: ``data_path("hw", "include")``, ``data_path("targets")``."""
    return PACKAGE_DIR.joinpath("_data", *parts)

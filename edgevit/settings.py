"""The few environment variables edgevit reads, in one place.

``EDGEVIT_CACHE``  where prepared things live (exported ONNX, aarch64 sysroot, runtime bundles);
                   default ``~/.cache/edgevit``.
``EDGEVIT_SEED``   seed for zoo weights and random inputs (default 0), so results repeat.
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

"""Executing code for other architectures on this machine with qemu user-mode emulation.

There is no board here, so an aarch64 artifact runs under ``qemu-aarch64-static`` with a real aarch64
Python and the aarch64 apache-tvm wheel (the same runtime a Raspberry Pi uses). The first use prepares,
once, into edgevit's cache: a minimal Debian arm64 tree for the Python interpreter (debootstrap) and a
site-packages folder with the aarch64 wheels of the TVM and numpy versions this host uses.
Timings under qemu say nothing about a real board: use it for correctness only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np

from .errors import EdgevitError, ExecutionError, ToolMissingError, errors_by_name
from .settings import PACKAGE_PARENT, cache_dir

DEBIAN_SUITE = "bookworm"  # Python 3.11, like the wheels we install for it
# What the board-side runner imports (and, for the RPC node agent, TVM's RPC extra).
RUNTIME_PACKAGES = ["apache-tvm", "apache-tvm-ffi", "numpy", "ml_dtypes", "typing_extensions",
                    "tornado", "psutil", "cloudpickle", "pyzmq"]
PROJECT_ROOT = PACKAGE_PARENT   # on the qemu Python's path: this same edgevit
_EMULATED = {"aarch64": ("arm64", "manylinux_2_28_aarch64", "qemu-aarch64-static")}


@dataclass(frozen=True)
class EmulatedPython:
    """A foreign-architecture Python under qemu: the command prefix and the environment it needs."""

    arch: str
    root: Path
    site: Path
    qemu: str

    def command(self, *args: str) -> list[str]:
        return [self.qemu, "-L", str(self.root), str(self.root / "usr/bin/python3.11"), *args]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=f"{self.site}:{PROJECT_ROOT}", TVM_USE_RUNTIME_LIB="1", PYTHONNOUSERSITE="1")
        return env


def _log(message: str) -> None:
    print(f"[edgevit] {message}", file=sys.stderr, flush=True)


def _require(command: str, apt: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise ToolMissingError(f"'{command}' not found: apt-get install {apt} (or run tools/setup.sh)")
    return path


def _debian_mirror() -> list[str]:
    """The Debian mirror this host's apt uses, so debootstrap fetches from the same place."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = path.read_text()
        except OSError:
            continue
        for token in text.replace("URIs:", " ").split():
            if token.startswith(("http://", "https://")) and token.rstrip("/").endswith("/debian"):
                return [token]
    return []


def _run_step(title: str, command: list[str], **kwargs) -> None:
    _log(f"{title} ...")
    start = time.monotonic()
    proc = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])
        raise EdgevitError(f"{title} failed (exit {proc.returncode}):\n{tail}")
    _log(f"{title}: done in {time.monotonic() - start:.0f} s")


def _prepare_root(debian_arch: str) -> Path:
    root = cache_dir("emulation", f"debian-{DEBIAN_SUITE}-{debian_arch}")
    if (root / ".complete").exists():
        return root
    _require("debootstrap", "debootstrap")
    _require("dpkg-deb", "dpkg")
    if os.geteuid() != 0:
        raise ToolMissingError(f"preparing the {debian_arch} Python needs root once (debootstrap): run "
                               "`sudo tools/setup.sh` or `sudo edgevit prepare`")
    shutil.rmtree(root)
    root.mkdir(parents=True)
    # --foreign only unpacks the base system; the Python packages it downloads are unpacked below.
    _run_step(f"debootstrap {DEBIAN_SUITE}/{debian_arch} (Python interpreter for qemu)",
              ["debootstrap", f"--arch={debian_arch}", "--variant=minbase", "--foreign",
               "--include=python3,libpython3.11", DEBIAN_SUITE, str(root), *_debian_mirror()])
    archives = sorted((root / "var/cache/apt/archives").glob("*.deb"))
    _log(f"unpacking {len(archives)} packages")
    for deb in archives:
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        deb.unlink()
    if not (root / "usr/bin/python3.11").exists():
        raise EdgevitError(f"debootstrap produced no python3.11 in {root}")
    (root / ".complete").touch()
    return root


def _prepare_site(platform_tag: str) -> Path:
    pins = [f"{name}=={importlib_metadata.version(name)}" for name in RUNTIME_PACKAGES]
    # The folder is keyed by every pin, so adding a package to RUNTIME_PACKAGES prepares a new site.
    key = "-".join(p.replace("==", "") for p in pins[:3]) + "-" + hashlib.sha256(" ".join(pins).encode()).hexdigest()[:8]
    site = cache_dir("emulation", f"site-{platform_tag}-{key}")
    if (site / ".complete").exists():
        return site
    shutil.rmtree(site)
    _run_step(f"pip: {platform_tag} wheels of {', '.join(pins[:3])}",
              [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
               "--target", str(site), "--platform", platform_tag, "--only-binary=:all:",
               "--python-version", "3.11", "--implementation", "cp", *pins])
    (site / ".complete").touch()
    return site


def prepare(arch: str) -> EmulatedPython:
    """Prepare (once) and return a Python for ``arch`` under qemu.

    Raises
    ------
    ToolMissingError
        qemu, debootstrap or root rights are missing; the message says how to install.
    """
    if arch not in _EMULATED:
        raise EdgevitError(f"no emulator known for {arch}; emulated architectures: {', '.join(_EMULATED)}")
    debian_arch, platform_tag, qemu = _EMULATED[arch]
    qemu_path = _require(qemu, "qemu-user-static")
    return EmulatedPython(arch, _prepare_root(debian_arch), _prepare_site(platform_tag), qemu_path)


def run_artifact(python: EmulatedPython, artifact_dir: Path, inputs: list[np.ndarray], repeat: int = 1,
                 timeout: float = 900) -> tuple[list[np.ndarray], list[float]]:
    """Run an extracted artifact with the board-side runner under qemu.

    Returns
    -------
    outputs, seconds
        The outputs and the per-run wall times (emulated: not a board's speed).
    """
    with tempfile.TemporaryDirectory(prefix="edgevit-qemu-") as tmp:
        in_path, out_path = Path(tmp) / "inputs.npz", Path(tmp) / "outputs.npz"
        np.savez(in_path, *inputs)
        command = python.command("-m", "edgevit.runtime.runner", str(artifact_dir), "--inputs", str(in_path),
                                 "--outputs", str(out_path), "--repeat", str(repeat))
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                                  env=python.environment(), cwd=tmp)
        except subprocess.TimeoutExpired:
            raise ExecutionError(f"the {python.arch} runner under qemu did not finish in {timeout:.0f} s") from None
        lines = proc.stdout.strip().splitlines()
        try:
            report = json.loads(lines[-1])
        except (IndexError, ValueError):
            tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
            raise ExecutionError(f"the {python.arch} runner under qemu failed (exit {proc.returncode}):\n{tail}") from None
        if "error" in report:
            raise errors_by_name(report["kind"])(report["error"])
        with np.load(out_path) as data:
            outputs = [data[f"arr_{i}"] for i in range(len(data.files))]
        return outputs, report["seconds"]

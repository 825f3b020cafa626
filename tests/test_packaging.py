"""The wheel works outside the checkout: built from the tracked files, installed into a fresh venv, used from
another folder (board files, HLS headers and templates come from the package's data, not the repository)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tracked_copy(dest: Path) -> Path:
    """The checkout's tracked files (symlinks kept) copied to ``dest``: what a clean clone holds."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split("\0")):
        src, out = ROOT / name, dest / name
        if not src.exists() and not src.is_symlink():
            continue    # deleted in the working tree, not yet committed
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        else:
            shutil.copy2(src, out)
    return dest


def _run(cmd: list, cwd: Path, env: dict) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_installed_in_a_fresh_venv_compiles_from_another_folder(tmp_path):
    source = _tracked_copy(tmp_path / "src")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path / "dist",
          "."], source, env)
    wheel = next((tmp_path / "dist").glob("edgevit-*.whl"))

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    site = Path(_run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).strip())
    # edgevit from the wheel only; its dependencies read from this venv's site-packages (no network here).
    # A path line in a .pth adds the folder without running its .pth files (so not edgevit's editable hook).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--no-deps", "--no-index",
          "-q", wheel], tmp_path, env)

    work = tmp_path / "elsewhere"
    work.mkdir()
    python = venv / "bin" / "python"
    where = _run([python, "-c", "import edgevit, sys; print(edgevit.__file__)"], work, env)
    assert where.startswith(str(site)), where
    assert "rpi4" in _run([python, "-m", "edgevit.cli", "targets"], work, env)
    _run([python, "-m", "edgevit.cli", "compile", "mobilevit_xxs", "--target", "rpi4", "-o", "m.tar"], work, env)
    assert (work / "m.tar").stat().st_size > 1 << 20
    _run([python, "-m", "edgevit.cli", "hls", "tiny_mobilevit", "--board", "pynq-z2", "-o", "hls"], work, env)
    out = _run([python, "-m", "edgevit.cli", "hls", "build", "hls", "--csim"], work, env)
    assert "0 mismatches" in out

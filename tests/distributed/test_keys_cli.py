"""``edgevit keys``: writes one keypair per member, says what goes where, never overwrites, and the data plane
module stays board-side (stdlib, numpy, pyzmq)."""

import argparse
import subprocess
import sys

import pytest

from edgevit.distributed import dataplane, keys_cli
from edgevit.errors import InputError


def run(argv):
    parser = argparse.ArgumentParser()
    keys_cli.register(parser.add_subparsers())
    args = parser.parse_args(["keys", *argv])
    return args.func(args)


def test_keys_command_writes_keys_and_says_where_they_go(tmp_path, capsys):
    assert run([str(tmp_path), "--members", "host, pi1,pi2"]) == 0
    out = capsys.readouterr().out
    for member in ["host", "pi1", "pi2"]:
        assert f"wrote {tmp_path / 'public' / member}.key" in out
        assert f"{member}: {tmp_path / 'private' / member}.key_secret" in out
        assert dataplane.Security.curve(tmp_path, member).public_key in dataplane.Security.curve(
            tmp_path, "host").authorised
    assert "whole" in out and "public" in out
    with pytest.raises(InputError, match="never overwrites"):
        run([str(tmp_path), "--members", "pi2"])
    with pytest.raises(InputError, match="empty"):
        run([str(tmp_path / "x"), "--members", " , "])


def test_data_plane_imports_nothing_from_the_compiler_side():
    code = (
        "import importlib.abc, sys\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime', 'tvm'):\n"
        "            raise ImportError(f'{name} is not for the data plane')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from edgevit.distributed import dataplane, keys_cli\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr

"""The node agent is board-side code: it must work where torch, onnx and ``tvm.relax`` do not exist."""

import subprocess
import sys

BLOCK = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime') or name.startswith('tvm.relax'):
            raise ImportError(f'{name} is not on a board')
sys.meta_path.insert(0, Block())
"""


def test_node_agent_works_without_compiler_side(tmp_path):
    code = BLOCK + (
        "from edgevit.distributed import node, dataplane\n"
        "import tvm.rpc.server, json\n"
        f"state = node.NodeState('k', '127.0.0.1', __import__('pathlib').Path({str(tmp_path)!r}), "
        "dataplane.Security.plaintext())\n"
        "node.register_functions(state)\n"
        "state.open_dataplane()\n"
        "print(json.dumps(state.info()))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"TVM_USE_RUNTIME_LIB": "1", "PATH": "/usr/bin:/bin"}, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert '"arch"' in proc.stdout

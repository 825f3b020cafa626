"""Bad or idle RPC clients cannot end or wedge a node (issue 20), and the tracker leaves nothing listening
after SIGTERM. Attacks are raw loopback sockets; after each one a real client must still get a session, run
``edgevit.node.health`` and see the node listed by the tracker."""

from __future__ import annotations

import errno
import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from tvm.rpc import base

from edgevit.distributed.local_cluster import free_port, kill_group
from edgevit.errors import ExecutionError

ROOT = Path(__file__).resolve().parents[2]
MAGIC = struct.pack("<i", base.RPC_MAGIC)


def _node(cluster, key: str = "x86", emulated=None) -> int:
    """Start a node, wait until the tracker lists it free, return its RPC port."""
    proc = cluster.add_node(key, emulated=emulated, wait=False)
    port = proc.ready(180 if emulated else 60)["port"]
    cluster.wait_for(key, 1, timeout=120 if emulated else 60)
    return port


def _hang_up_after(sock: socket.socket, payload: bytes) -> None:
    """Send ``payload``, half-close, and read until the node hangs up (it must, within the socket's timeout)."""
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):  # hung up with some of our bytes unread
        pass
    except OSError as exc:
        if exc.errno != errno.ENOTCONN:  # ENOTCONN: that reset came before our half-close
            raise


def _send(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        _hang_up_after(sock, payload)


def _assert_serves(cluster, key: str = "x86", timeout: float = 30.0) -> None:
    """A real client gets a session on a node of ``key``, runs a function, and the tracker lists the node."""
    session = cluster.client(timeout).request(key, wait=60)
    try:
        assert session.health()["ok"]
    finally:
        session.close()
    rows = {r["key"]: r for r in cluster.client(timeout).nodes()}
    assert rows[key]["total"] == 1
    cluster.wait_for(key, 1)  # free again once the session ended


def _handshake(key: bytes) -> bytes:
    return MAGIC + struct.pack("<i", len(key)) + key


def test_empty_or_non_utf8_key_does_not_end_node(cluster):
    port = _node(cluster)
    for payload in (MAGIC + struct.pack("<i", 0), _handshake(b"client:\xff\xfe\xfd"), _handshake(b"   ")):
        _send(port, payload)
        _assert_serves(cluster)


def test_idle_connections_do_not_wedge_node(cluster):
    port = _node(cluster)
    idle = [socket.create_connection(("127.0.0.1", port), timeout=60) for _ in range(3)]
    half = socket.create_connection(("127.0.0.1", port), timeout=60)
    half.sendall(MAGIC + struct.pack("<i", 40) + b"client:")  # a handshake that stops half way
    try:
        _assert_serves(cluster)
        for sock in idle + [half]:  # the node hangs up on a handshake that does not finish
            try:
                assert sock.recv(1) == b""
            except ConnectionResetError:
                pass
    finally:
        for sock in idle + [half]:
            sock.close()
    _assert_serves(cluster)


BAD_CLIENTS = {
    "connect-and-close": b"",
    "half-magic": MAGIC[:2],
    "wrong-magic": struct.pack("<i", base.RPC_MAGIC + 1) + b"client:x",
    "garbage": bytes(range(256)) * 4,
    "huge-key-length": MAGIC + struct.pack("<i", 0x7FFFFFFF) + b"client:",
    "negative-key-length": MAGIC + struct.pack("<i", -8),
    "wrong-key": _handshake(b"client:not-the-match-key -timeout=5"),
    "bad-timeout": _handshake(b"client:x -timeout=soon"),
}


def test_bad_handshakes_leave_node_serving(cluster):
    port = _node(cluster)  # one node takes every attack in turn
    for name, payload in BAD_CLIENTS.items():
        _send(port, payload)
        try:
            _assert_serves(cluster)
        except Exception as exc:
            raise AssertionError(f"node stopped serving after the '{name}' client") from exc


def _match_key(cluster, key: str) -> tuple[int, str]:
    """Ask the tracker for a node the way TVM's client does: ``(port, match key)`` of a free node."""
    with socket.create_connection(("127.0.0.1", cluster.tracker_port), timeout=30) as sock:
        sock.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
        assert base.recvall(sock, 4) == struct.pack("<i", base.RPC_TRACKER_MAGIC)
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "attacker", 1])
        code, (_, port, match_key) = base.recvjson(sock)
        assert code == base.TrackerCode.SUCCESS
        return port, match_key


def _send_in_session(port: int, match_key: str, payload: bytes) -> None:
    """Open a session with a valid handshake, then send ``payload`` where TVM's RPC packets belong."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(_handshake(f"client:{match_key} -timeout=20".encode()))
        assert base.recvall(sock, 4) == struct.pack("<i", base.RPC_CODE_SUCCESS)
        _hang_up_after(sock, payload)


def test_garbage_inside_a_session_does_not_end_node(cluster):
    _node(cluster)
    port, match_key = _match_key(cluster, "x86")
    _send_in_session(port, match_key, struct.pack("<q", 1 << 40) + os.urandom(256))  # no session holds that
    _assert_serves(cluster)


def test_match_key_taken_but_unused_is_replaced(cluster):
    _node(cluster)
    _match_key(cluster, "x86")  # the tracker hands this client the node's key; it never connects
    _assert_serves(cluster)  # the node puts a new key after a few seconds, as TVM's loop does


def test_silent_session_ends_at_its_timeout(cluster):
    _node(cluster)
    silent = cluster.client(30).request("x86", session_timeout=4)
    try:
        rows = {r["key"]: r for r in cluster.client(30).nodes()}
        assert rows["x86"]["free"] == 0 and rows["x86"]["busy"] == 1  # busy with the silent session
        _assert_serves(cluster)  # served once the silent session's 4 s are up
        with pytest.raises(ExecutionError):  # the silent session was ended
            silent.health()
    finally:
        silent.close()


def test_emulated_node_survives_bad_handshake(cluster, aarch64_python):
    port = _node(cluster, "rpi4", emulated=aarch64_python)
    _send(port, MAGIC + struct.pack("<i", 0))
    idle = socket.create_connection(("127.0.0.1", port), timeout=120)
    try:
        _assert_serves(cluster, "rpi4", timeout=120)
    finally:
        idle.close()


def _group(pgid: int) -> set[int]:
    """The processes of a process group."""
    pids = set()
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid:
                pids.add(proc.pid)
        except (ProcessLookupError, PermissionError):
            pass
    return pids


def _listening(pids: set[int], port: int) -> list[int]:
    found = []
    for pid in pids:
        try:
            if any(c.laddr.port == port and c.status == psutil.CONN_LISTEN
                   for c in psutil.Process(pid).net_connections(kind="tcp")):
                found.append(pid)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def test_tracker_sigterm_leaves_nothing_listening():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edgevit.distributed", "tracker", "--port", str(port)],
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert "listening" in proc.stdout.readline()
        socket.create_connection(("127.0.0.1", port), timeout=10).close()
        assert _listening(_group(proc.pid), port)
        proc.send_signal(signal.SIGTERM)  # to the tracker alone, as `kill PID` does
        assert proc.wait(timeout=30) == 0
        assert not _listening(_group(proc.pid), port)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=10).close()
    finally:
        kill_group(proc)


BOARD = """
import importlib.abc, socket, struct, sys, threading
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'onnx', 'onnxruntime') or name.startswith('tvm.relax'):
            raise ImportError(f'{name} is not on a board')
sys.meta_path.insert(0, Block())
import tvm_ffi
from tvm import rpc
from edgevit.distributed import rpc_listener
tvm_ffi.register_global_func('guard.add_one', lambda x: x + 1)
listener = rpc_listener.GuardedListener('127.0.0.1', 0, 0, 'k', None)
threading.Thread(target=listener.serve_forever, daemon=True).start()
with socket.create_connection(('127.0.0.1', listener.port), timeout=30) as bad:
    bad.sendall(struct.pack('<ii', 0xFF271, 0))
    assert bad.recv(1) == b''
remote = rpc.connect('127.0.0.1', listener.port, key='k', session_timeout=60)
print(remote.get_function('guard.add_one')(41))
"""


def test_listener_without_tracker_runs_board_side():
    proc = subprocess.run([sys.executable, "-c", BOARD], capture_output=True, text=True, cwd=ROOT, timeout=120,
                          env={"TVM_USE_RUNTIME_LIB": "1", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split()[-1] == "42"

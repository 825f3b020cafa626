"""The tensor channel: bulk tensor bytes between the host and a node, beside TVM RPC.

Why it exists: TVM 0.27's RPC moves tensor and byte arguments at ~45 MB/s on loopback (a 588 KiB round trip
costs 20-45 ms; ``tools/rpc_transport_bench.py``). ``TCP_NODELAY`` on both ends removes the Nagle/delayed-ACK
stall on small messages (1 KiB: 0.48 -> 0.12 ms) but not the per-byte cost, which ``perf`` shows is CPU time
inside ``libtvm_runtime``'s RPC endpoint, not the socket. So TVM RPC keeps discovery (tracker), sessions and
remote execution (``edgevit.node.*`` functions), and tensors travel here: one TCP connection per RPC session,
opened by an RPC call that returns a port and a one-time token, ``TCP_NODELAY`` set, each message a 4-byte
length + JSON header + raw bytes. Standard library only (it runs on boards and under qemu).

The node side keeps a small store of named tensors per session: the host ``put``s inputs, calls
``edgevit.node.run`` through RPC with their names, and ``get``s the outputs.
"""

from __future__ import annotations

import json
import secrets
import socket
import struct
import threading

import numpy as np

from ..errors import ExecutionError

_HEADER = struct.Struct("<I")
TOKEN_BYTES = 16


def _recv_exact(sock: socket.socket, n: int, buf=None):
    buf = bytearray(n) if buf is None else buf
    view, got = memoryview(buf).cast("B"), 0
    while got < n:
        k = sock.recv_into(view[got:], n - got)
        if k == 0:
            raise ConnectionError("tensor channel closed by peer")
        got += k
    return buf


def _send(sock: socket.socket, header: dict, payload: bytes | memoryview = b"") -> None:
    blob = json.dumps(header).encode()
    head = _HEADER.pack(len(blob)) + blob
    if not len(payload):
        sock.sendall(head)
        return
    sent = sock.sendmsg([head, payload])  # one syscall for header and data in the common case
    if sent < len(head):
        sock.sendall(head[sent:])
        sent = len(head)
    if sent - len(head) < len(payload):
        sock.sendall(memoryview(payload)[sent - len(head):])


def _recv(sock: socket.socket):
    """One message: its header and its payload (an uninitialised numpy byte buffer, filled in place)."""
    (size,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    header = json.loads(_recv_exact(sock, size))
    nbytes = header.get("nbytes", 0)
    payload = _recv_exact(sock, nbytes, np.empty(nbytes, np.uint8)) if nbytes else np.empty(0, np.uint8)
    return header, payload


def _array(header: dict, payload: np.ndarray) -> np.ndarray:
    return payload.view(header["dtype"]).reshape(header["shape"])


def _tensor_header(op: str, name: str, x: np.ndarray) -> dict:
    return {"op": op, "name": name, "dtype": str(x.dtype), "shape": list(x.shape), "nbytes": x.nbytes}


class ChannelServer:
    """Node side: listen on ``host`` (an ephemeral port), accept one connection that presents the token,
    and serve ``put``/``get``/``drop`` on ``store`` in a daemon thread."""

    def __init__(self, host: str, store: dict, file_path, timeout: float = 30.0):
        self.host, self.store = host, store
        self.file_path = file_path  # name -> where an uploaded file goes (it validates the name)
        self.token = secrets.token_hex(TOKEN_BYTES // 2).encode()
        self._listener = socket.create_server((host, 0))
        self._listener.settimeout(timeout)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True, name="edgevit-channel").start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
        except OSError:
            return
        finally:
            self._listener.close()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                if bytes(_recv_exact(conn, len(self.token))) != self.token:
                    return
                while True:
                    header, payload = _recv(conn)
                    op, name = header["op"], header.get("name", "")
                    if op == "put":
                        self.store[name] = _array(header, payload)
                        _send(conn, {"ok": True})
                    elif op == "get":
                        x = self.store.get(name)
                        if x is None:
                            _send(conn, {"error": f"no tensor '{name}' on this node"})
                        else:
                            x = np.ascontiguousarray(x)
                            _send(conn, _tensor_header("tensor", name, x), memoryview(x).cast("B"))
                    elif op == "drop":
                        for n in header.get("names", []):
                            self.store.pop(n, None)
                        _send(conn, {"ok": True})
                    elif op == "put_file":
                        try:
                            path = self.file_path(name)
                        except ValueError as exc:
                            _send(conn, {"error": str(exc)})
                            continue
                        tmp = path.with_name(path.name + ".partial")
                        tmp.write_bytes(payload.tobytes())
                        tmp.replace(path)
                        _send(conn, {"ok": True})
                    else:
                        _send(conn, {"error": f"unknown channel operation '{op}'"})
            except (ConnectionError, OSError, ValueError, KeyError):
                return

    def describe(self) -> dict:
        return {"host": self.host, "port": self.port, "token": self.token.decode()}


class ChannelClient:
    """Host side of one session's tensor channel. Every operation has a timeout (``timeout`` seconds)."""

    def __init__(self, host: str, port: int, token: str, timeout: float = 30.0):
        try:
            self._sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise ExecutionError(f"cannot open the tensor channel to {host}:{port}: {exc}") from None
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock.sendall(token.encode())
        self.bytes_sent = self.bytes_received = 0

    def _call(self, header: dict, payload=b"") -> tuple[dict, bytearray]:
        try:
            _send(self._sock, header, payload)
            reply, data = _recv(self._sock)
        except (OSError, ConnectionError) as exc:
            raise ExecutionError(f"tensor channel failed during '{header['op']}': {exc}") from None
        if "error" in reply:
            raise ExecutionError(reply["error"])
        self.bytes_sent += len(payload)
        self.bytes_received += len(data)
        return reply, data

    def put(self, name: str, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x)
        self._call(_tensor_header("put", name, x), memoryview(x).cast("B") if x.nbytes else b"")

    def get(self, name: str) -> np.ndarray:
        header, data = self._call({"op": "get", "name": name})
        return _array(header, data)

    def drop(self, names: list[str]) -> None:
        self._call({"op": "drop", "names": names})

    def put_file(self, name: str, data: bytes) -> None:
        self._call({"op": "put_file", "name": name, "nbytes": len(data)}, data)

    def close(self) -> None:
        self._sock.close()

"""The data plane: tensors between the host and nodes, and node to node, on ZeroMQ with CURVE security.

TVM RPC + tracker keep discovery, upload and control; tensors travel here. Every member of a cluster (the host
and each node) has a ``Server``: a bound ROUTER socket served by one loop thread, which calls a handler for each
request and can forward a stage's output straight to the next member's ``Server`` (``Server.send``). The host
talks to a ``Server`` through a ``Client`` (a DEALER; request/reply with ids, or one-way ``send``).

Wire format (one ZeroMQ multipart message): a JSON frame ``{"op", "id", "arrays": [{"dtype", "shape"}, ...],
"header": {...}}`` and one raw frame per array (C order, native little-endian bytes). Replies have op ``reply``
or ``error`` (header ``{"error": message, "kind": edgevit.errors class name}``) and the request's id. A message
is validated against its JSON frame (allowed dtypes, shapes, byte counts, frame count, ``max_message_bytes``)
before any array is made; arrays are read-only views of the received frames (no copy).

Security: CURVE (libsodium, bundled with pyzmq) with keys made by ``edgevit keys``: each member has its own
keypair and every member's public key; a server admits only clients whose public key is in ``public/`` (a ZAP
authenticator), and a client checks the server's key the same way before connecting. Plain text only through
``Security.plaintext()``, which the CLI offers behind an explicit flag. Board side: stdlib, numpy and pyzmq only.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from ..errors import EdgevitError, ExecutionError, InputError, errors_by_name

MAX_MESSAGE_BYTES = 256 << 20
MAX_HEADER_BYTES = 64 << 10
MAX_DIMS = 32
# Messages a socket queues per peer before a send waits (client) or fails (forwarding): a node with 1 GB must not
# buffer a thousand tensors (libzmq's default) for a stage that stopped reading.
QUEUE_MESSAGES = 64
ALLOWED_DTYPES = frozenset({"float32", "float16", "float64", "int8", "uint8", "int16", "int32", "int64", "bool"})
ZAP_DOMAIN = "edgevit"
_MEMBER = re.compile(r"[A-Za-z0-9_.-]+\Z")
_log = logging.getLogger(__name__)


def _check_member(name: str) -> str:
    if not _MEMBER.match(name) or name in (".", ".."):
        raise InputError(f"invalid member name '{name}': use letters, digits, '_', '.' and '-' only")
    return name


def make_keys(folder: Path, members: list[str]) -> list[Path]:
    """Make CURVE keys for a cluster: ``folder/public/<member>.key`` and ``folder/private/<member>.key_secret``.

    Parameters
    ----------
    folder : Path
        Where to write; ``public/`` and ``private/`` are created (``private/`` readable by the owner only).
    members : list of str
        Member names (``[A-Za-z0-9_.-]+``), e.g. ``["host", "pi1", "pi2"]``.

    Returns
    -------
    list of Path
        The files written, public and secret key of each member in turn.

    Raises
    ------
    InputError
        A bad or repeated member name, or a member whose keys already exist (never overwritten).
    """
    folder = Path(folder)
    if not members:
        raise InputError("no members given: name at least one (e.g. --members host,pi1)")
    for name in members:
        _check_member(name)
    if len(set(members)) != len(members):
        raise InputError(f"a member is named twice in {', '.join(members)}")
    public, private = folder / "public", folder / "private"
    existing = [p for m in members for p in (public / f"{m}.key", private / f"{m}.key_secret") if p.exists()]
    if existing:
        raise InputError(f"keys exist already ({', '.join(map(str, existing))}): edgevit never overwrites keys; "
                         "delete them first or choose another folder")
    try:
        public.mkdir(parents=True, exist_ok=True)
        private.mkdir(parents=True, exist_ok=True)
        private.chmod(0o700)
        written = []
        for name in members:
            with tempfile.TemporaryDirectory(dir=private) as tmp:
                pub, sec = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
                Path(sec).chmod(0o600)
                written += [Path(shutil.move(pub, public / pub.name)), Path(shutil.move(sec, private / sec.name))]
    except OSError as exc:
        raise InputError(f"cannot write keys into {folder}: {exc}") from None
    return written


def _load_key(path: Path, secret: bool) -> tuple[bytes, bytes | None]:
    """A certificate's z85 public (and secret) key, checked to be CURVE keys; InputError otherwise."""
    try:
        public_key, secret_key = zmq.auth.load_certificate(path)
        if len(z85.decode(public_key)) != 32:
            raise ValueError("the public key is not a 32-byte z85 key")
        if secret:
            if secret_key is None:
                raise ValueError("it holds no secret key")
            if zmq.curve_public(secret_key) != public_key:
                raise ValueError("its secret key does not belong to its public key")
    except (OSError, ValueError, zmq.ZMQError) as exc:
        raise InputError(f"cannot read the CURVE key {path}: {exc} (make keys with `edgevit keys`)") from None
    return public_key, secret_key


class Security:
    """How one member's sockets are secured: CURVE with its own keypair and the cluster's public keys, or plain
    text. Build it with ``Security.curve`` or ``Security.plaintext``."""

    def __init__(self, public_key: str | None, secret_key: str | None, authorised: frozenset[str],
                 member: str | None):
        self.public_key, self._secret_key = public_key, secret_key
        self.authorised, self.member = authorised, member

    @classmethod
    def curve(cls, folder: Path, member: str) -> "Security":
        """CURVE for ``member``: its keypair from ``folder/private/<member>.key_secret``; the authorised peers
        are every key in ``folder/public/``.

        Raises
        ------
        InputError
            Missing, unreadable or invalid key files, or ``member``'s own key missing from ``public/``.
        """
        folder = Path(folder)
        public_key, secret_key = _load_key(folder / "private" / f"{_check_member(member)}.key_secret", secret=True)
        files = sorted((folder / "public").glob("*.key"))
        if not files:
            raise InputError(f"no public keys in {folder / 'public'}: copy the cluster's whole public/ folder "
                             "from where `edgevit keys` wrote it")
        authorised = frozenset(_load_key(p, secret=False)[0].decode() for p in files)
        if public_key.decode() not in authorised:
            raise InputError(f"{member}'s public key is not in {folder / 'public'}: that folder is from another "
                             "cluster; copy the public/ folder made with this member's key")
        return cls(public_key.decode(), secret_key.decode(), authorised, member)

    @classmethod
    def plaintext(cls) -> "Security":
        """No authentication and no encryption: anyone who reaches the port can send and read tensors. Only
        for an explicit user flag on a trusted network; it logs a warning saying so."""
        _log.warning("data plane in plain text: no authentication, no encryption (trusted networks only)")
        return cls(None, None, frozenset(), None)

    def describe(self) -> str:
        """One line for logs and status output."""
        if self.public_key is None:
            return "plain text (no authentication, no encryption)"
        return f"CURVE as '{self.member}' ({len(self.authorised)} authorised keys)"

    def check_peer(self, public_key: str | None) -> None:
        """Raise InputError unless a server with ``public_key`` may be talked to: an authorised key under
        CURVE, no key under plain text."""
        if self.public_key is None:
            if public_key is not None:
                raise InputError("the peer uses CURVE but this member runs in plain text: give it its keys")
            return
        if public_key is None:
            raise InputError("the peer runs in plain text but this member uses CURVE: refusing an unencrypted "
                             "data plane (give the peer its keys, or run every member in plain text)")
        if public_key not in self.authorised:
            raise InputError(f"the peer's key {public_key[:8]}... is not in this member's public/ folder: it is "
                             "not part of the cluster (copy the cluster's public/ folder, or check the address)")

    def _secure_server(self, sock: zmq.Socket) -> None:
        if self.public_key is not None:
            sock.zap_domain = ZAP_DOMAIN.encode()
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = self.public_key.encode(), self._secret_key.encode()

    def _secure_client(self, sock: zmq.Socket, server_key: str | None) -> None:
        if self.public_key is not None:
            sock.curve_serverkey = server_key.encode()
            sock.curve_publickey, sock.curve_secretkey = self.public_key.encode(), self._secret_key.encode()

    def callback(self, domain: str, client_key: bytes) -> bool:
        """ZAP credentials check (called by pyzmq's authenticator): is the client's z85 key authorised?"""
        return client_key.decode() in self.authorised


class Malformed(Exception):
    """A message that breaks the wire format; ``reason`` is its ``stats`` counter name."""

    def __init__(self, reason: str, message: str, msg_id=None):
        super().__init__(message)
        self.reason, self.msg_id = reason, msg_id


def encode(op: str, msg_id, header: dict, arrays) -> list:
    """The frames of one message (arrays as zero-copy uint8 views of C-contiguous native-order data)."""
    specs, frames = [], []
    for x in arrays:
        a = np.asarray(x)
        if a.dtype.name not in ALLOWED_DTYPES:
            raise InputError(f"cannot send a {a.dtype} array on the data plane: allowed dtypes are "
                             + ", ".join(sorted(ALLOWED_DTYPES)))
        if not a.dtype.isnative:
            a = a.astype(a.dtype.newbyteorder("="))
        a = np.require(a, requirements="C")
        specs.append({"dtype": a.dtype.name, "shape": list(a.shape)})
        frames.append(a.reshape(-1).view(np.uint8))
    try:
        blob = json.dumps({"op": op, "id": msg_id, "arrays": specs, "header": header}, separators=(",", ":")).encode()
    except (TypeError, ValueError) as exc:
        raise InputError(f"the header of '{op}' cannot be sent as JSON: {exc}") from None
    if len(blob) > MAX_HEADER_BYTES:
        raise InputError(f"the header of '{op}' is {len(blob)} bytes of JSON, over {MAX_HEADER_BYTES}: send data "
                         "as arrays")
    return [blob, *frames]


def _shape_bytes(spec, max_bytes: int) -> tuple[np.dtype, tuple[int, ...], int]:
    if not isinstance(spec, dict) or spec.get("dtype") not in ALLOWED_DTYPES:
        raise Malformed("bad_dtype", f"array spec {str(spec)[:80]}: dtype must be one of {sorted(ALLOWED_DTYPES)}")
    dtype, shape = np.dtype(spec["dtype"]), spec.get("shape")
    if (not isinstance(shape, list) or len(shape) > MAX_DIMS
            or not all(type(d) is int and d >= 0 for d in shape)):
        raise Malformed("bad_shape", f"shape {str(shape)[:80]} is not a list of at most {MAX_DIMS} sizes")
    # Zero-size arrays are bounded too (by their nonzero sizes), so numpy never sees an absurd shape.
    bound, nbytes = dtype.itemsize, dtype.itemsize
    for d in shape:
        bound, nbytes = bound * max(d, 1), nbytes * d
        if bound > max_bytes:
            raise Malformed("too_large", f"an array of shape {str(shape)[:80]} exceeds {max_bytes} bytes")
    return dtype, tuple(shape), nbytes


def decode(frames: list, max_bytes: int) -> tuple[str, object, dict, list[np.ndarray]]:
    """``(op, id, header, arrays)`` of a received message (``zmq.Frame`` list); raises ``Malformed``."""
    if not frames:
        raise Malformed("empty", "an empty message")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise Malformed("header_too_large", f"a JSON header over {MAX_HEADER_BYTES} bytes")
    try:
        msg = json.loads(frames[0].bytes)
    except (ValueError, RecursionError):
        raise Malformed("bad_json", "the first frame is not JSON") from None
    if not isinstance(msg, dict):
        raise Malformed("bad_header", "the JSON header is not an object")
    msg_id = msg.get("id")
    if not (msg_id is None or type(msg_id) is int or (isinstance(msg_id, str) and len(msg_id) <= 64)):
        raise Malformed("bad_header", "the message id is not an integer")
    op, header, specs = msg.get("op"), msg.get("header", {}), msg.get("arrays", [])
    if not isinstance(op, str) or not 0 < len(op) <= 64 or not isinstance(header, dict) or not isinstance(specs, list):
        raise Malformed("bad_header", "the JSON header needs op (a string), header (an object), arrays (a list)",
                        msg_id)
    if len(specs) != len(frames) - 1:
        raise Malformed("frame_count", f"'{op}' declares {len(specs)} arrays but carries {len(frames) - 1} frames",
                        msg_id)
    layouts, total = [], 0
    for spec in specs:
        try:
            layouts.append(_shape_bytes(spec, max_bytes))
        except Malformed as exc:
            exc.msg_id = msg_id
            raise
        total += layouts[-1][2]
    if total > max_bytes:
        raise Malformed("too_large", f"'{op}' carries {total} bytes, over the limit of {max_bytes}", msg_id)
    arrays = []
    for (dtype, shape, nbytes), frame in zip(layouts, frames[1:]):
        if len(frame) != nbytes:
            raise Malformed("byte_count", f"'{op}': an array of {shape} {dtype} needs {nbytes} bytes, "
                                          f"its frame has {len(frame)}", msg_id)
        arrays.append(np.frombuffer(frame.buffer, dtype=dtype).reshape(shape))
    return op, msg_id, header, arrays


def _configure(sock: zmq.Socket, max_message_bytes: int) -> zmq.Socket:
    sock.linger = 0
    sock.setsockopt(zmq.MAXMSGSIZE, max_message_bytes)
    sock.sndhwm = sock.rcvhwm = QUEUE_MESSAGES
    return sock


def _error_header(exc: BaseException) -> dict:
    if isinstance(exc, EdgevitError):
        return {"error": str(exc), "kind": type(exc).__name__}
    return {"error": f"{type(exc).__name__}: {exc}", "kind": "ExecutionError"}


class Server:
    """A member's bound ROUTER socket (CURVE server behind a ZAP authenticator that admits only authorised
    client keys) and the loop thread that owns it.

    ``handler(op, header, arrays)`` runs in the loop thread for every valid request and returns the reply
    ``(header, arrays)``, or None for no reply (streamed messages). An exception in it becomes an error reply;
    malformed messages are dropped, counted in ``stats["dropped"]`` and answered with an error. Received arrays
    are read-only views of the message: copy one to keep writing into it.

    Parameters
    ----------
    host : str
        Address to bind (``127.0.0.1``, a LAN address, ``0.0.0.0``).
    security : Security
        This member's keys (or plain text).
    handler : callable
        ``handler(op, header, arrays) -> (header, arrays) | None``.
    port : int
        Port to bind; 0 picks a free one.
    max_message_bytes : int
        Largest frame libzmq accepts (``zmq.MAXMSGSIZE``: bigger ones drop the connection before allocation)
        and largest total of array bytes in one message.
    """

    def __init__(self, host: str, security: Security, handler, port: int = 0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        self.security, self.max_message_bytes, self._handler = security, max_message_bytes, handler
        self.public_key = security.public_key
        self.stats = {"requests": 0, "replies": 0, "handler_errors": 0, "forwarded": 0, "forward_errors": 0,
                      "loop_errors": 0, "dropped": Counter()}
        self._ctx = zmq.Context()
        self._auth = None
        self._peers: dict[str, zmq.Socket] = {}
        self._lock = threading.Lock()
        self._closed = self._closed_by_handler = False
        try:
            if security.public_key is not None:
                self._auth = ThreadAuthenticator(self._ctx, log=logging.getLogger(__name__ + ".auth"))
                self._auth.start()
                self._auth.configure_curve_callback(ZAP_DOMAIN, security)
            self._sock = self._socket(zmq.ROUTER)
            security._secure_server(self._sock)
            self._sock.bind(f"tcp://{host}:{port or '*'}")
        except zmq.ZMQError as exc:
            if self._auth is not None:
                self._auth.stop()
            self._ctx.destroy(linger=0)
            raise ExecutionError(f"cannot open the data plane on {host}:{port}: {exc}") from None
        self.address = self._sock.last_endpoint.decode()
        self._wake_in = self._ctx.socket(zmq.PAIR)
        self._wake_in.bind(f"inproc://wake-{id(self)}")
        self._wake_out = self._ctx.socket(zmq.PAIR)
        self._wake_out.connect(f"inproc://wake-{id(self)}")
        self._poller = zmq.Poller()
        self._poller.register(self._sock, zmq.POLLIN)
        self._poller.register(self._wake_in, zmq.POLLIN)
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"edgevit-dataplane-{self.address}")
        self._thread.start()

    def _socket(self, kind: int) -> zmq.Socket:
        return _configure(self._ctx.socket(kind), self.max_message_bytes)

    def _loop(self) -> None:
        while True:
            try:
                ready = dict(self._poller.poll())
                if self._wake_in in ready:
                    break
                for sock in ready:
                    if sock is self._sock:
                        self._serve_one()
                    else:
                        self._peer_reply(sock)
            except zmq.ContextTerminated:
                break
            except Exception:
                # Never let one message end the member's data plane; the count tells tests and status.
                self.stats["loop_errors"] += 1
                _log.exception("data plane loop error on %s", self.address)
        for sock in [self._sock, self._wake_in, *self._peers.values()]:
            sock.close(linger=0)
        if self._closed_by_handler:
            self._teardown()

    def _reply(self, identity, frames: list) -> None:
        # A ROUTER drops (never blocks on) a message for a peer that is gone or whose queue is full.
        self._sock.send_multipart([identity, *frames], copy=False)
        self.stats["replies"] += 1

    def _serve_one(self) -> None:
        identity, *frames = self._sock.recv_multipart(copy=False)
        try:
            op, msg_id, header, arrays = decode(frames, self.max_message_bytes)
        except Malformed as exc:
            self.stats["dropped"][exc.reason] += 1
            self._reply(identity, encode("error", exc.msg_id, {"error": f"malformed message: {exc}",
                                                                "kind": "InputError"}, []))
            return
        self.stats["requests"] += 1
        try:
            result = self._handler(op, header, arrays)
            if result is None:
                return
            reply_header, reply_arrays = result
            frames = encode("reply", msg_id, reply_header, reply_arrays)
        except Exception as exc:
            self.stats["handler_errors"] += 1
            frames = encode("error", msg_id, _error_header(exc), [])
        self._reply(identity, frames)

    def _peer_reply(self, sock: zmq.Socket) -> None:
        """A reply from a member this one forwarded to: only errors are expected (forwards want no answer)."""
        frames = sock.recv_multipart(copy=False)
        try:
            op, _, header, _ = decode(frames, self.max_message_bytes)
        except Malformed as exc:
            self.stats["dropped"][exc.reason] += 1
            return
        if op == "error":
            self.stats["forward_errors"] += 1
            _log.warning("a forwarded message was refused: %s", header.get("error"))

    def send(self, address: str, public_key: str | None, header: dict, arrays=()) -> None:
        """Send a message (``header["op"]`` names it; no reply expected) to another member's Server.

        Only from inside the handler (the loop thread owns the connections). The connection to ``address`` is
        kept for later sends; ``public_key`` is checked with ``Security.check_peer`` first. Arrays are sent
        without a copy: do not write into them afterwards.

        Raises
        ------
        InputError
            ``public_key`` is not an authorised key (or the security modes differ).
        ExecutionError
            The peer's queue is full (it is not taking messages).
        """
        if threading.current_thread() is not self._thread:
            raise RuntimeError("Server.send is for the handler (the loop thread) only")
        op = header.get("op")
        if not isinstance(op, str) or not op:
            raise InputError("a forwarded message needs an 'op' (a string) in its header")
        self.security.check_peer(public_key)
        sock = self._peers.get(address)
        if sock is None:
            sock = self._socket(zmq.DEALER)
            self.security._secure_client(sock, public_key)
            sock.connect(address)
            self._peers[address] = sock
            self._poller.register(sock, zmq.POLLIN)
        try:
            sock.send_multipart(encode(op, None, header, arrays), copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:
            raise ExecutionError(f"the data plane peer {address} is not taking messages (its queue is full: "
                                 "is it running?)") from None
        self.stats["forwarded"] += 1

    def close(self) -> None:
        """Stop the loop thread and release the port (idempotent; also from inside the handler)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._closed_by_handler = threading.current_thread() is self._thread
            self._wake_out.send(b"")
        if not self._closed_by_handler:
            self._thread.join()
            self._teardown()

    def _teardown(self) -> None:
        """After the loop has closed its sockets: the wake-up socket, the authenticator, the context."""
        self._wake_out.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        self._ctx.term()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Client:
    """A DEALER connected to one Server (a CURVE client with this member's keys). Not thread-safe: one caller
    at a time.

    Parameters
    ----------
    address : str
        The server's ``tcp://HOST:PORT``.
    server_public_key : str or None
        The server's z85 public key (None for plain text); checked with ``security.check_peer``.
    security : Security
        This member's keys.
    timeout : float
        Seconds a call waits for its reply, and a send for room in the queue.
    """

    def __init__(self, address: str, server_public_key: str | None, security: Security, timeout: float = 30.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        security.check_peer(server_public_key)
        self.address, self.timeout, self.max_message_bytes = address, timeout, max_message_bytes
        self.bytes_sent = self.bytes_received = 0
        self.stale_replies = 0
        self.stream_errors: deque[tuple[str, str]] = deque(maxlen=100)  # (kind, message) for one-way sends
        self._ids = itertools.count(1)
        self._sock = _configure(zmq.Context.instance().socket(zmq.DEALER), max_message_bytes)
        self._sock.sndtimeo = int(timeout * 1000)
        security._secure_client(self._sock, server_public_key)
        try:
            self._sock.connect(address)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise InputError(f"bad data plane address '{address}' (expected tcp://HOST:PORT): {exc}") from None

    def _send(self, op: str, msg_id, header: dict, arrays) -> None:
        frames = encode(op, msg_id, header, arrays)
        try:
            self._sock.send_multipart(frames, copy=False)
        except zmq.Again:
            # No connection, or a full queue: also what a client whose key the server refuses sees.
            raise ExecutionError(f"cannot send '{op}' to {self.address}: no connection taking messages after "
                                 f"{self.timeout:g} s (is the server running, and is this member's key in its "
                                 "public/ folder?)") from None
        self.bytes_sent += sum(memoryview(f).nbytes for f in frames)

    def call(self, op: str, header: dict, arrays=(), timeout: float | None = None) -> tuple[dict, list[np.ndarray]]:
        """Send a request and wait for its reply ``(header, arrays)`` (arrays: read-only views of the reply).

        Raises
        ------
        ExecutionError
            No reply within ``timeout`` (default: the client's), or a malformed reply.
        EdgevitError
            The server's handler failed: its error, re-raised as the class it reported.
        """
        timeout = self.timeout if timeout is None else timeout
        msg_id = next(self._ids)
        self._send(op, msg_id, header, arrays)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._sock.poll(max(1, int(remaining * 1000))):
                raise ExecutionError(f"no reply from {self.address} to '{op}' within {timeout:g} s (is the server "
                                     "running, and is this member's key in its public/ folder?)")
            frames = self._sock.recv_multipart(copy=False)
            try:
                rop, rid, rheader, rarrays = decode(frames, self.max_message_bytes)
            except Malformed as exc:
                raise ExecutionError(f"malformed reply from {self.address} to '{op}': {exc}") from None
            if rid is None and rop == "error":
                self.stream_errors.append((str(rheader.get("kind")), str(rheader.get("error"))))
                continue
            if rid != msg_id:
                self.stale_replies += 1  # the late answer to a request that timed out earlier
                continue
            self.bytes_received += sum(len(f) for f in frames)
            if rop == "error":
                cls = errors_by_name(str(rheader.get("kind")))
                raise cls(f"{rheader.get('error')} (from {self.address}, '{op}')")
            return rheader, rarrays

    def send(self, op: str, header: dict, arrays=()) -> None:
        """Send a message that expects no reply (e.g. a streamed input). Arrays are sent without a copy: do
        not write into them afterwards. If the server refuses it (malformed, or its handler failed), the error
        is appended to ``stream_errors`` when the next ``call`` reads it."""
        self._send(op, None, header, arrays)

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._sock.close(linger=0)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

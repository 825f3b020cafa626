"""TVM RPC listeners that one bad client or a signal cannot break: the node's accept loop and the tracker.

Why the node does not run TVM's own loop (``tvm.rpc.server._listen_loop``): that loop reads each client's
handshake in its single thread with no timeout and lets any error in it end the loop, so eight bytes (the
magic, then key length 0 or a key that is not UTF-8) stopped a node, and one connection that sends nothing
wedged it while the tracker still listed it free (issue 20).

``GuardedListener`` keeps TVM's protocol and semantics and owns the loop instead:

- an accept thread only accepts; each connection's handshake ``[RPC_MAGIC, key length, key]`` is read by a
  short-lived thread of its own, within ``HANDSHAKE_TIMEOUT`` seconds (at most ``MAX_HANDSHAKES`` at once:
  beyond that new connections are closed at once). A wrong magic, a key length outside 1..``MAX_KEY_BYTES``,
  a key that is not UTF-8, a bad ``-timeout=``, a wrong match key, silence or a hang-up closes that
  connection and nothing else (a well-formed key that does not match gets TVM's ``RPC_CODE_MISMATCH``).
- the main loop (``serve_forever``) speaks TVM's tracker protocol as TVM's loop does: ``UPDATE_INFO`` as
  ``server:<key>``, ``PUT`` of a random match key, every 2 s ``GET_PENDING_MATCHKEYS`` and a new key when a
  client took the key from the tracker but never came, re-registration after a tracker restart (giving up
  after ``TRACKER_RETRY`` seconds without one).
- one session at a time: the handshake that presents the current match key uses it up, so the tracker,
  which handed that key out, lists the node busy until the session ends and a new key is put. The session
  is TVM's session loop (``tvm.rpc.server._serve_loop``) in a forked process, as in TVM, ended at the
  timeout the client asked for (``UNTIMED_SESSION_LIMIT`` if it asked none). A session that crashes (e.g. on
  garbage after a valid handshake) is logged; the node goes on.

``TrackerServer`` runs TVM's tracker in a daemon thread of the calling process instead of TVM's extra worker
process, which outlived ``edgevit tracker`` on SIGTERM and kept listening; SIGTERM, SIGINT and SIGHUP stop it
with TVM's own ``STOP`` message.

Every use of TVM's RPC internals in edgevit's listeners is in this module. Board side: stdlib, ``tvm.rpc``
and ``tvm.support`` only (runs with ``TVM_USE_RUNTIME_LIB=1`` and under qemu).
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import queue
import signal
import socket
import struct
import threading
import time

from tvm.rpc import _ffi_api, base
from tvm.rpc.server import _serve_loop
from tvm.support import utils

from ..errors import EdgevitError

HANDSHAKE_TIMEOUT = 5.0  # seconds a client has to send its whole handshake
MAX_HANDSHAKES = 64  # handshakes read at once; more connections are closed unread
MAX_KEY_BYTES = 1024  # "client:<key>:<random> -timeout=S" is under 200 bytes
UNTIMED_SESSION_LIMIT = 3600.0  # seconds for a session whose client asked for no timeout
PING_PERIOD = 2.0  # as TVM's loop: how often the tracker is asked whether the match key was taken
UNMATCHED_TIMEOUT = 4.0  # as TVM's loop: a key taken but unused for longer than this is replaced
TRACKER_RETRY = 60.0  # as TVM's connect_with_retry: seconds without a tracker before the node gives up
_FORK = multiprocessing.get_context("fork")  # sessions inherit the registered functions, as in TVM

logger = logging.getLogger("edgevit.node")


def _check_port(port: int) -> None:
    if not 0 <= port <= 65535:
        raise OSError(f"port {port} is not in 0..65535")


class _Rejected(Exception):
    """A handshake the node refuses; the connection is closed."""


def _recv_exact(conn: socket.socket, size: int, deadline: float) -> bytes:
    chunks, got = [], 0
    while got < size:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _Rejected("handshake timed out")
        conn.settimeout(remaining)
        try:
            chunk = conn.recv(min(size - got, 4096))
        except socket.timeout:
            raise _Rejected("handshake timed out") from None
        if not chunk:
            raise _Rejected("closed during the handshake")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _session_timeout(options: list[str]) -> float:
    """The ``-timeout=S`` a client asked for (TVM's only session option), checked."""
    for option in options:
        if option.startswith("-timeout="):
            try:
                seconds = float(option[len("-timeout="):])
            except ValueError:
                raise _Rejected(f"bad session option {option!r}") from None
            if not (math.isfinite(seconds) and seconds > 0):
                raise _Rejected(f"bad session option {option!r}")
            return seconds
    return UNTIMED_SESSION_LIMIT


def _session_main(conn: socket.socket, work, inherited: list[socket.socket]) -> None:
    """The forked session process: TVM's session loop on the handshaken connection, in its own folder."""
    for sock in inherited:  # the listener's sockets are the parent's business
        sock.close()
    os.chdir(work.path)
    _serve_loop(conn, None, work)


class GuardedListener:
    """A TVM RPC server's listening socket and loop that no single client can end or block.

    Parameters
    ----------
    host : str
        Address to bind, and to advertise to the tracker.
    port, port_end : int
        The first free port in ``[port, port_end)`` is used (``port`` 0: one the system picks).
    key : str
        The device kind the server registers as (``server:<key>`` in the tracker).
    tracker : tuple of (str, int) or None
        Tracker address; without one, clients connect with ``client:<key>`` and are served in turn.
    silent : bool
        Log only problems (not refused clients and ended sessions), and quiet TVM's session logging.
    """

    def __init__(self, host: str, port: int, port_end: int, key: str, tracker: tuple[str, int] | None,
                 silent: bool = True):
        _check_port(port)
        self.host, self.key, self.tracker = host, key, tracker
        if silent:
            logging.getLogger("RPCServer").setLevel(logging.ERROR)  # TVM's session logs each module load
        elif not logger.handlers:
            logger.setLevel(logging.INFO)
            logger.addHandler(logging.StreamHandler())
        self._sock = socket.socket(base.get_addr_family((host, port)), socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        end = min(max(port_end, port + 1), 65536)
        for candidate in range(port, end):
            try:
                self._sock.bind((host, candidate))
                break
            except OSError as exc:
                if candidate + 1 >= end:
                    self._sock.close()
                    raise OSError(f"no free port in [{port}, {port_end}): {exc}") from None
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._lock = threading.Lock()
        self._match_key = None if tracker else key  # None: used up, a new one goes to the tracker
        self._sessions: queue.Queue = queue.Queue()  # (conn, addr, timeout), or None for a key lost on the way
        self._handshakes = threading.BoundedSemaphore(MAX_HANDSHAKES)
        self._stop = threading.Event()
        self._tracker_conn: socket.socket | None = None

    def close(self) -> None:
        """Stop accepting (``serve_forever`` returns within ``PING_PERIOD``) and close the listening socket."""
        self._stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept thread
        except OSError:
            pass
        self._sock.close()

    def serve_forever(self) -> None:
        """Accept and serve sessions until ``close``.

        Raises
        ------
        EdgevitError
            The tracker has been unreachable for ``TRACKER_RETRY`` seconds.
        """
        threading.Thread(target=self._accept_loop, daemon=True, name="edgevit-accept").start()
        unmatched = 0
        while not self._stop.is_set():
            try:
                if self.tracker and self._tracker_conn is None:
                    self._tracker_conn = self._register()
                    unmatched = 0
                if self.tracker and self._match_key is None:
                    self._put_new_key()
                try:
                    session = self._sessions.get(timeout=PING_PERIOD)
                except queue.Empty:
                    session = None
                    if self.tracker:
                        unmatched = self._check_key(unmatched)
            except (OSError, ValueError, struct.error) as exc:  # the tracker went away or spoke nonsense
                logger.warning("tracker connection lost (%s): registering again", exc)
                self._drop_tracker()
                self._stop.wait(1.0)
                continue
            if session is not None:
                try:
                    self._serve_session(*session)
                except OSError as exc:  # no fork or temporary folder right now: this client loses its session
                    logger.warning("cannot start a session for %s: %s", session[1], exc)
        self._drop_tracker()

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except OSError as exc:  # closed by close(), or out of file descriptors for a moment
                if not self._stop.is_set():
                    logger.warning("accept failed: %s", exc)
                    self._stop.wait(0.5)
                continue
            if not self._handshakes.acquire(blocking=False):
                conn.close()
                continue
            threading.Thread(target=self._handshake, args=(conn, addr), daemon=True,
                             name="edgevit-handshake").start()

    def _handshake(self, conn: socket.socket, addr) -> None:
        claimed = False
        try:
            deadline = time.monotonic() + HANDSHAKE_TIMEOUT
            if struct.unpack("<i", _recv_exact(conn, 4, deadline))[0] != base.RPC_MAGIC:
                raise _Rejected("not a TVM RPC client")
            size = struct.unpack("<i", _recv_exact(conn, 4, deadline))[0]
            if not 0 < size <= MAX_KEY_BYTES:
                raise _Rejected(f"key length {size}")
            try:
                words = _recv_exact(conn, size, deadline).decode("utf-8").split()
            except UnicodeDecodeError:
                raise _Rejected("key is not UTF-8") from None
            timeout = _session_timeout(words[1:])
            claimed = bool(words) and self._claim(words[0])
            if not claimed:
                conn.sendall(struct.pack("<i", base.RPC_CODE_MISMATCH))
                raise _Rejected("wrong match key")
            reply = f"server:{self.key}".encode()
            conn.sendall(struct.pack("<ii", base.RPC_CODE_SUCCESS, len(reply)) + reply)
            conn.settimeout(None)  # TVM's session loop needs a blocking socket
            self._sessions.put((conn, addr, timeout))
        except (_Rejected, OSError) as exc:
            logger.info("refused %s: %s", addr, exc)
            conn.close()
            if claimed:
                self._sessions.put(None)  # the key is used up: have the main loop put a new one
        finally:
            self._handshakes.release()

    def _claim(self, header: str) -> bool:
        """Whether ``header`` is ``client:<current match key>``; with a tracker, the key is then used up."""
        with self._lock:
            if self._match_key is None or header != f"client:{self._match_key}":
                return False
            if self.tracker:
                self._match_key = None
            return True

    def _register(self) -> socket.socket:
        deadline = time.monotonic() + TRACKER_RETRY
        while True:
            try:
                conn = socket.create_connection(self.tracker, timeout=30)
                break
            except OSError as exc:
                if time.monotonic() > deadline or self._stop.is_set():
                    raise EdgevitError(f"node '{self.key}' stopped: tracker {self.tracker[0]}:{self.tracker[1]} "
                                       f"unreachable for {TRACKER_RETRY:g} s ({exc})") from None
                self._stop.wait(5.0)
        with self._lock:
            self._match_key = None  # a new tracker connection has none of our keys
        try:
            conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
            if struct.unpack("<i", base.recvall(conn, 4))[0] != base.RPC_TRACKER_MAGIC:
                raise OSError(f"{self.tracker[0]}:{self.tracker[1]} is not a TVM tracker")
            self._tracker_call(conn, [base.TrackerCode.UPDATE_INFO,
                                      {"key": f"server:{self.key}", "addr": [self.host, self.port]}])
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _tracker_call(conn: socket.socket, message: list):
        base.sendjson(conn, message)
        return base.recvjson(conn)

    def _put_new_key(self) -> None:
        key = base.random_key(self.key)
        with self._lock:
            self._match_key = key
        reply = self._tracker_call(self._tracker_conn, [base.TrackerCode.PUT, self.key, [self.port, key], self.host])
        if reply != base.TrackerCode.SUCCESS:
            raise ValueError(f"tracker refused the node: {reply}")

    def _check_key(self, unmatched: int) -> int:
        """TVM's rule for a match key the tracker handed out but no client used: replace it after a while."""
        key = self._match_key
        if key is None:
            return 0
        pending = self._tracker_call(self._tracker_conn, [base.TrackerCode.GET_PENDING_MATCHKEYS])
        unmatched = 0 if key in pending else unmatched + 1
        if unmatched * PING_PERIOD > UNMATCHED_TIMEOUT + PING_PERIOD:
            with self._lock:
                if self._match_key == key:
                    self._match_key = None
            return 0
        return unmatched

    def _drop_tracker(self) -> None:
        if self._tracker_conn is not None:
            self._tracker_conn.close()
            self._tracker_conn = None

    def _serve_session(self, conn: socket.socket, addr, timeout: float) -> None:
        try:
            work = utils.tempdir()
        except BaseException:
            conn.close()
            raise
        inherited = [self._sock] + ([self._tracker_conn] if self._tracker_conn else [])
        proc = _FORK.Process(target=_session_main, args=(conn, work, inherited), daemon=True)
        try:
            proc.start()
            proc.join(timeout)
            if proc.is_alive():
                logger.info("session of %s reached its %g s timeout: ended", addr, timeout)
                _tell_expired(conn, timeout)
                _end(proc)
            elif proc.exitcode != 0:
                logger.warning("session of %s ended with exit code %s", addr, proc.exitcode)
        finally:
            conn.close()
            work.remove()


def _tell_expired(conn: socket.socket, timeout: float) -> None:
    """Send the client TVM's session-timeout error, as TVM's loop does; best effort (it may be gone)."""
    try:
        _ffi_api.ReturnException(conn.fileno(), f"RPCSessionTimeoutError: Your {timeout:g}s session has expired, "
                                 'try to increase the "session_timeout" value.')
    except Exception as exc:  # whatever TVM raises for a dead socket must not end the node
        logger.info("could not tell the client its session expired: %s", exc)


def _end(proc) -> None:
    """Terminate a session process and whatever it started."""
    try:
        import psutil
    except ImportError:  # not every board has psutil: then only the session process itself is ended
        psutil = None
    if psutil is not None:
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.terminate()
        except psutil.NoSuchProcess:
            pass
    proc.terminate()
    proc.join(5)
    if proc.is_alive():
        proc.kill()
        proc.join()


class _Stop(Exception):
    """Raised in the main thread by the stop signals."""


def _raise_stop(signum, frame):
    raise _Stop


class TrackerServer:
    """TVM's RPC tracker, served by a daemon thread of this process.

    Parameters
    ----------
    host : str
        Address to bind.
    port : int
        Port to bind (only this one).
    """

    def __init__(self, host: str, port: int):
        from tvm.rpc.tracker import _tracker_server

        _check_port(port)
        logging.getLogger("RPCTracker").setLevel(logging.WARNING)
        self.host = host
        self._sock = socket.socket(base.get_addr_family((host, port)), socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self._stop_key = base.random_key("tracker")
        self._thread = threading.Thread(target=_tracker_server, args=(self._sock, self._stop_key), daemon=True,
                                        name="edgevit-tracker")
        self._thread.start()

    def serve_until_signal(self) -> None:
        """Serve until SIGTERM, SIGINT or SIGHUP (call from the main thread), then stop."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, _raise_stop)
        try:
            while self._thread.is_alive():
                self._thread.join(1.0)
        except _Stop:
            pass
        finally:
            self.stop()

    def stop(self) -> None:
        """Close every connection and the listening socket (TVM's ``STOP``) and end the serving thread."""
        if not self._thread.is_alive():
            return
        address = ("127.0.0.1" if self.host in ("", "0.0.0.0") else "::1" if self.host == "::" else self.host,
                   self.port)
        try:
            with socket.create_connection(address, timeout=5) as conn:
                conn.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
                base.recvall(conn, 4)
                base.sendjson(conn, [base.TrackerCode.STOP, self._stop_key])
                base.recvjson(conn)
        except (OSError, ValueError, struct.error) as exc:
            logger.warning("tracker did not stop cleanly (%s): its sockets close with the process", exc)
        self._thread.join(5)

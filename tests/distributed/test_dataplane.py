"""The ZeroMQ data plane: round trips, CURVE admission, forwarding, and bad input that must never break a server.

Everything on 127.0.0.1 with servers in this process; each bad input is followed by a valid request."""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgevit.distributed import dataplane as dp
from edgevit.errors import ExecutionError, InputError

DTYPES = sorted(dp.ALLOWED_DTYPES)
SHAPES = [(), (0,), (3, 0, 2), (1,), (2, 3, 5), (7, 1, 1, 3)]
SHORT = 0.5  # seconds a call waits when no answer is the expected outcome


class Echo:
    """A handler: ``echo`` returns what it got, ``raise_*`` fail, ``slow`` answers late; it counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, op, header, arrays):
        self.calls += 1
        if op == "raise_input":
            raise InputError("that input does not fit")
        if op == "raise_value":
            raise ValueError("a bug in the handler")
        if op == "slow":
            time.sleep(header["seconds"])
            return {"slow": True}, []
        if op == "bad_reply":
            return {}, [np.array(["text"])]
        if op == "not_a_reply":
            return {"just": "a dict"}
        return {"op": op, "header": header}, list(arrays)


@contextmanager
def serving(security, handler=None, **kwargs):
    server = dp.Server("127.0.0.1", security, handler or Echo(), **kwargs)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    folder = tmp_path_factory.mktemp("keys")
    dp.make_keys(folder, ["host", "a", "b"])
    return folder


@pytest.fixture(scope="module")
def plain():
    return dp.Security.plaintext()


@pytest.fixture(scope="module")
def plain_server(plain):
    with serving(plain) as server:
        yield server


@pytest.fixture(scope="module")
def curve_server(keys):
    with serving(dp.Security.curve(keys, "a")) as server:
        yield server


def echo_ok(server, security) -> None:
    """A valid request gets its answer: the server is alive and serving."""
    with dp.Client(server.address, server.public_key, security, timeout=5) as client:
        x = np.arange(12, dtype=np.int32).reshape(3, 4)
        header, arrays = client.call("echo", {"n": 1}, [x])
    assert header == {"op": "echo", "header": {"n": 1}}
    np.testing.assert_array_equal(arrays[0], x)


def raw_dealer(server, security: dp.Security | None = None, server_key: str | None = None) -> zmq.Socket:
    """A bare DEALER that can send any frames (CURVE client keys when ``security`` is given)."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.sndtimeo = 5000  # a refused peer may have no connection to queue on: never hang the test
    if security is not None:
        security._secure_client(sock, server_key)
    sock.connect(server.address)
    return sock


def raw_exchange(sock: zmq.Socket, frames: list[bytes], timeout: float = 5.0) -> tuple[dict, list[bytes]] | None:
    """The answer to ``frames``, or None if none came (or they could not even be sent)."""
    try:
        sock.send_multipart(frames)
    except zmq.Again:
        return None
    if not sock.poll(int(timeout * 1000)):
        return None
    first, *rest = sock.recv_multipart()
    return json.loads(first), rest


# ---------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip_every_dtype_and_odd_shape(plain_server, plain, dtype):
    rng = np.random.default_rng(0)
    arrays = [(rng.standard_normal(s) * 100).astype(dtype) for s in SHAPES]
    arrays.append(np.asfortranarray(rng.standard_normal((3, 4))).astype(dtype)[:, ::2])  # not C-contiguous
    with dp.Client(plain_server.address, None, plain, timeout=5) as client:
        _, back = client.call("echo", {}, arrays)
        assert client.bytes_sent > sum(a.nbytes for a in arrays)
        assert client.bytes_received > sum(a.nbytes for a in arrays)
    assert len(back) == len(arrays)
    for x, y in zip(arrays, back):
        assert y.dtype == x.dtype and y.shape == x.shape
        np.testing.assert_array_equal(y, x)


def test_round_trip_over_curve_and_byte_order(curve_server, keys):
    x = np.arange(24, dtype=">f8").reshape(2, 3, 4)  # big-endian: sent as native
    with dp.Client(curve_server.address, curve_server.public_key, dp.Security.curve(keys, "host")) as client:
        header, (y,) = client.call("echo", {"k": [1, "two"]}, [x])
    assert header["header"] == {"k": [1, "two"]}
    assert y.dtype == np.float64 and y.dtype.isnative
    np.testing.assert_array_equal(y, x)


def test_a_dtype_outside_the_list_is_refused_before_sending(plain_server, plain):
    with dp.Client(plain_server.address, None, plain, timeout=5) as client:
        with pytest.raises(InputError, match="allowed dtypes"):
            client.call("echo", {}, [np.array([1 + 2j])])
        with pytest.raises(InputError, match="JSON"):
            client.call("echo", {"x": object()})
    echo_ok(plain_server, plain)


def test_a_late_reply_is_not_taken_for_the_next_request(plain_server, plain):
    with dp.Client(plain_server.address, None, plain, timeout=5) as client:
        with pytest.raises(ExecutionError, match="no reply .* to 'slow'"):
            client.call("slow", {"seconds": 0.4}, timeout=0.1)
        header, _ = client.call("echo", {"after": True})
        assert header == {"op": "echo", "header": {"after": True}}
        assert client.stale_replies == 1


# ---------------------------------------------------------------- keys and CURVE

def test_make_keys_writes_each_member_and_never_overwrites(tmp_path):
    written = dp.make_keys(tmp_path, ["host", "pi-1", "pi_2.b"])
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == sorted(
        [f"public/{m}.key" for m in ["host", "pi-1", "pi_2.b"]]
        + [f"private/{m}.key_secret" for m in ["host", "pi-1", "pi_2.b"]])
    assert (tmp_path / "private").stat().st_mode & 0o077 == 0
    assert all(p.stat().st_mode & 0o077 == 0 for p in (tmp_path / "private").iterdir())
    before = (tmp_path / "private" / "host.key_secret").read_bytes()
    with pytest.raises(InputError, match="never overwrites"):
        dp.make_keys(tmp_path, ["new", "host"])
    assert (tmp_path / "private" / "host.key_secret").read_bytes() == before
    assert not (tmp_path / "public" / "new.key").exists()
    for bad in [["a/b"], [".."], ["x y"], [], ["a", "a"]]:
        with pytest.raises(InputError):
            dp.make_keys(tmp_path / "other", bad)


def test_security_curve_refuses_missing_or_broken_keys(tmp_path, keys):
    with pytest.raises(InputError, match="cannot read"):
        dp.Security.curve(keys, "nobody")
    bad = tmp_path / "bad"
    shutil.copytree(keys, bad)
    (bad / "private" / "a.key_secret").write_text("not a key\n")
    with pytest.raises(InputError, match="(?i)no public key"):
        dp.Security.curve(bad, "a")
    # b's secret under a's name: the secret does not match the public key written next to it
    (bad / "private" / "a.key_secret").write_text(
        (keys / "private" / "b.key_secret").read_text().replace(
            dp.zmq.auth.load_certificate(keys / "private" / "b.key_secret")[0].decode(),
            dp.zmq.auth.load_certificate(keys / "public" / "a.key")[0].decode()))
    with pytest.raises(InputError, match="does not belong"):
        dp.Security.curve(bad, "a")
    (bad / "private" / "a.key_secret").write_text((keys / "private" / "a.key_secret").read_text())
    (bad / "public" / "b.key").write_text('public-key = "tooshort"\n')
    with pytest.raises(InputError, match="b.key"):
        dp.Security.curve(bad, "a")
    other = tmp_path / "other"
    dp.make_keys(other, ["a"])
    shutil.rmtree(other / "public")
    shutil.copytree(keys / "public", other / "public")
    with pytest.raises(InputError, match="not in"):
        dp.Security.curve(other, "a")


def test_check_peer_refuses_unknown_keys_and_mixed_modes(keys, tmp_path, plain):
    host = dp.Security.curve(keys, "host")
    host.check_peer(dp.Security.curve(keys, "b").public_key)
    dp.make_keys(tmp_path, ["stranger"])
    stranger = dp.Security.curve(tmp_path, "stranger").public_key
    with pytest.raises(InputError, match="not in this member's public/"):
        host.check_peer(stranger)
    with pytest.raises(InputError, match="plain text"):
        host.check_peer(None)
    with pytest.raises(InputError, match="CURVE"):
        plain.check_peer(stranger)
    plain.check_peer(None)
    with pytest.raises(InputError):
        dp.Client("tcp://127.0.0.1:1", stranger, host)


def rogue_security(keys, tmp_path) -> dp.Security:
    """A member of another cluster who knows the server's public key (public keys are not secret)."""
    dp.make_keys(tmp_path, ["rogue"])
    for f in (keys / "public").iterdir():
        shutil.copy(f, tmp_path / "public" / f.name)
    return dp.Security.curve(tmp_path, "rogue")


def test_an_unauthorised_key_gets_no_answer_and_the_server_keeps_serving(keys, tmp_path):
    handler = Echo()
    with serving(dp.Security.curve(keys, "a"), handler) as server:
        rogue = rogue_security(keys, tmp_path)
        with dp.Client(server.address, server.public_key, rogue, timeout=SHORT) as client:
            # refused handshakes: the request waits for a connection or a reply, depending on timing
            with pytest.raises(ExecutionError, match="is this member's key in its public/ folder"):
                client.call("echo", {}, [np.ones(4, np.float32)])
        echo_ok(server, dp.Security.curve(keys, "host"))
        assert handler.calls == 1  # only the authorised request reached the handler


def test_a_plaintext_peer_cannot_talk_to_a_curve_server(curve_server, keys, plain):
    with pytest.raises(InputError, match="plain text"):
        dp.Client(curve_server.address, curve_server.public_key, plain)
    sock = raw_dealer(curve_server)  # no CURVE at all: the handshake never completes
    try:
        assert raw_exchange(sock, [dp.encode("echo", 1, {}, [])[0]], timeout=SHORT) is None
    finally:
        sock.close()
    echo_ok(curve_server, dp.Security.curve(keys, "host"))


# ---------------------------------------------------------------- forwarding

def test_forwarding_from_a_handler_to_the_next_member(keys, tmp_path):
    received = []
    arrived = threading.Event()

    def sink(op, header, arrays):
        received.append((op, header, [a.copy() for a in arrays]))
        arrived.set()

    with serving(dp.Security.curve(keys, "b"), sink) as b:
        stranger_key = rogue_security(keys, tmp_path).public_key

        def stage(op, header, arrays):
            target = stranger_key if op == "to_stranger" else b.public_key
            stage_server.send(b.address, target, {"op": "feed", "seq": header["seq"]}, [arrays[0] + 1])
            return {"forwarded": True}, []

        with serving(dp.Security.curve(keys, "a"), stage) as stage_server:
            x = np.linspace(0, 1, 10, dtype=np.float32)
            with dp.Client(stage_server.address, stage_server.public_key, dp.Security.curve(keys, "host")) as c:
                assert c.call("stage", {"seq": 7}, [x])[0] == {"forwarded": True}
                assert arrived.wait(5)
                with pytest.raises(InputError, match="not in this member's public/"):
                    c.call("to_stranger", {"seq": 8}, [x])
            assert stage_server.stats["forwarded"] == 1
            with pytest.raises(RuntimeError, match="handler"):
                stage_server.send(b.address, b.public_key, {"op": "feed"}, [])
    op, header, (y,) = received[0]
    assert (op, header) == ("feed", {"op": "feed", "seq": 7})
    np.testing.assert_array_equal(y, x + 1)
    assert len(received) == 1


def test_forwarding_to_a_stopped_member_fails_after_a_bounded_queue(keys):
    with serving(dp.Security.curve(keys, "b")) as b:
        gone_address, gone_key = b.address, b.public_key

    def stage(op, header, arrays):
        if op == "no_op":
            stage_server.send(gone_address, gone_key, {"seq": 1}, [])
        stage_server.send(gone_address, gone_key, {"op": "feed"}, [np.zeros(16, np.float32)])
        return {}, []

    with serving(dp.Security.curve(keys, "a"), stage) as stage_server:
        with dp.Client(stage_server.address, stage_server.public_key, dp.Security.curve(keys, "host")) as c:
            with pytest.raises(InputError, match="needs an 'op'"):
                c.call("no_op", {})
            accepted = 0
            with pytest.raises(ExecutionError, match="not taking messages"):
                for _ in range(dp.QUEUE_MESSAGES + 1):
                    c.call("stage", {})
                    accepted += 1
            assert accepted == dp.QUEUE_MESSAGES  # queued up to the limit, then refused, never blocked
        assert stage_server.stats["forwarded"] == dp.QUEUE_MESSAGES
        assert stage_server.stats["loop_errors"] == 0


def test_a_header_too_large_is_refused_before_sending(plain_server, plain):
    with dp.Client(plain_server.address, None, plain, timeout=5) as client:
        with pytest.raises(InputError, match="over 65536"):
            client.send("echo", {"blob": "x" * dp.MAX_HEADER_BYTES})
    echo_ok(plain_server, plain)


# ---------------------------------------------------------------- bad input

def header_frame(arrays, op="echo", msg_id=5, **extra) -> bytes:
    return json.dumps({"op": op, "id": msg_id, "arrays": arrays, "header": {}, **extra}).encode()


BAD_MESSAGES = {
    "0xFFFFFFFF bytes": ([header_frame([{"dtype": "uint8", "shape": [0xFFFFFFFF]}]), b"x" * 16], "too_large"),
    "huge shape": ([header_frame([{"dtype": "float32", "shape": [1 << 40, 1 << 40]}]), b""], "too_large"),
    "huge zero-size shape": ([header_frame([{"dtype": "float32", "shape": [0] + [1 << 20] * 4}]), b""],
                             "too_large"),
    "object dtype": ([header_frame([{"dtype": "object", "shape": [1]}]), b"x" * 8], "bad_dtype"),
    "unicode dtype": ([header_frame([{"dtype": "<U10", "shape": [1]}]), b"x" * 40], "bad_dtype"),
    "negative size": ([header_frame([{"dtype": "int8", "shape": [-1]}]), b""], "bad_shape"),
    "more frames than declared": ([header_frame([{"dtype": "int8", "shape": [2]}]), b"ab", b"cd"], "frame_count"),
    "fewer frames than declared": ([header_frame([{"dtype": "int8", "shape": [2]}] * 2), b"ab"], "frame_count"),
    "byte count mismatch": ([header_frame([{"dtype": "float32", "shape": [3]}]), b"x" * 11], "byte_count"),
    "invalid JSON": ([b"{\"op\": \"echo\", ", b"x"], "bad_json"),
    "JSON list": ([b"[1, 2]"], "bad_header"),
    "no op": ([json.dumps({"id": 5, "arrays": []}).encode()], "bad_header"),
    "deep JSON": ([b"[" * 30000 + b"]" * 30000], "bad_json"),
    "oversized header": ([b" " * (dp.MAX_HEADER_BYTES + 1)], "header_too_large"),
}


@pytest.mark.parametrize("name", BAD_MESSAGES)
def test_a_malformed_message_is_dropped_answered_and_counted(plain_server, plain, name):
    frames, reason = BAD_MESSAGES[name]
    before = plain_server.stats["dropped"][reason]
    sock = raw_dealer(plain_server)
    try:
        reply = raw_exchange(sock, frames)
    finally:
        sock.close()
    assert reply is not None
    assert reply[0]["op"] == "error" and reply[0]["header"]["kind"] == "InputError"
    assert "malformed" in reply[0]["header"]["error"]
    assert plain_server.stats["dropped"][reason] == before + 1
    echo_ok(plain_server, plain)
    assert plain_server.stats["loop_errors"] == 0


def test_handler_errors_become_error_replies_with_their_class(plain_server, plain):
    with dp.Client(plain_server.address, None, plain, timeout=5) as client:
        with pytest.raises(InputError, match="that input does not fit"):
            client.call("raise_input", {})
        with pytest.raises(ExecutionError, match="ValueError: a bug in the handler"):
            client.call("raise_value", {})
        with pytest.raises(InputError, match="allowed dtypes"):
            client.call("bad_reply", {})
        with pytest.raises(ExecutionError, match="ValueError"):
            client.call("not_a_reply", {})
        client.send("raise_input", {})
        assert client.call("echo", {})[0]["op"] == "echo"
        assert list(client.stream_errors) == [("InputError", "that input does not fit")]
    echo_ok(plain_server, plain)


def test_stray_tcp_connections_do_not_disturb_the_server(plain_server, curve_server, plain, keys):
    for server in (plain_server, curve_server):
        port = int(server.address.rsplit(":", 1)[1])
        silent = socket.create_connection(("127.0.0.1", port))  # stays open, says nothing
        for payload in [os.urandom(4096), b"\xff" * 10 + b"\x7f" + b"\x00" * 64, b"GET / HTTP/1.1\r\n\r\n"]:
            with socket.create_connection(("127.0.0.1", port)) as stray:
                stray.sendall(payload)
        echo_ok(server, plain if server is plain_server else dp.Security.curve(keys, "host"))
        silent.close()
        assert server.stats["loop_errors"] == 0


def test_a_frame_over_the_size_limit_is_refused_by_libzmq(plain):
    handler = Echo()
    with serving(plain, handler, max_message_bytes=4096) as server:
        sock = raw_dealer(server)
        try:
            big = header_frame([{"dtype": "uint8", "shape": [8192]}])
            assert raw_exchange(sock, [big, b"x" * 8192], timeout=SHORT) is None  # disconnected, not answered
        finally:
            sock.close()
        with dp.Client(server.address, None, plain, timeout=5) as client:
            with pytest.raises(InputError, match="over the limit"):
                client.call("echo", {}, [np.zeros(800, np.float32), np.zeros(800, np.float32)])
        echo_ok(server, plain)
        assert handler.calls == 1


# ---------------------------------------------------------------- generated bad input

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=12))
shapes = st.one_of(st.lists(st.integers(-3, 2**66), max_size=40), json_scalars)
specs = st.one_of(st.fixed_dictionaries({"dtype": st.sampled_from(DTYPES + ["object", "<U10", "float128",
                                                                            "complex64", "V8", ">f4"]) | json_scalars,
                                         "shape": shapes}), json_scalars)
headers = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["echo", "raise_value"]), json_scalars),
     "id": st.one_of(st.integers(-5, 2**70), json_scalars),
     "arrays": st.one_of(st.lists(specs, max_size=4), json_scalars),
     "header": st.one_of(st.dictionaries(st.text(max_size=5), json_scalars, max_size=3), json_scalars)})
first_frames = st.one_of(headers.map(lambda h: json.dumps(h).encode()), st.binary(max_size=64))
messages = st.tuples(first_frames, st.lists(st.binary(max_size=96), max_size=5))


def check_answered(server, sock, first, rest) -> None:
    """Every message gets exactly one answer (a reply or an error): nothing crashes, nothing hangs."""
    reply = raw_exchange(sock, [first, *rest])
    assert reply is not None, "no answer"
    header, frames = reply
    assert header["op"] in ("reply", "error")
    if header["op"] == "reply":
        assert frames == rest  # the echo handler returned what it was given, byte for byte
    assert server.stats["loop_errors"] == 0


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=messages)
def test_generated_bad_messages_never_break_a_plaintext_server(plain_server, plain, message):
    sock = raw_dealer(plain_server)
    try:
        check_answered(plain_server, sock, *message)
    finally:
        sock.close()
    echo_ok(plain_server, plain)


@settings(max_examples=15, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(message=messages)
def test_generated_bad_messages_never_break_a_curve_server(curve_server, keys, message):
    host = dp.Security.curve(keys, "host")
    sock = raw_dealer(curve_server, host, curve_server.public_key)
    try:
        check_answered(curve_server, sock, *message)
    finally:
        sock.close()
    echo_ok(curve_server, host)

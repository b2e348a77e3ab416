"""The per-connection RPC state machine, frames in, frames out (no sockets)."""

import json

import pytest

from ggdefender.eventstream import Decoder, Frame, Header, HeaderType, encode
from ggdefender.local.nucleus.rpc import (Close, Connected, Rejected, Request, RpcConnection, StreamClosed)

TOKEN = "ABCDEF0123456789"


def frame(mt, flags=0, sid=0, extra=(), payload=b""):
    return encode(Frame(list(extra) + [Header.int32(":message-type", mt), Header.int32(":message-flags", flags),
                                       Header.int32(":stream-id", sid)], payload))


def connect_frame(token=TOKEN, version="0.1.0"):
    extra = [] if version is None else [Header.string(":version", version)]
    return frame(4, extra=extra, payload=json.dumps({"authToken": token}).encode())


def request(sid, op="aws.greengrass#PublishToTopic", payload=b"{}", flags=0):
    return frame(0, flags, sid, [Header.string(":content-type", "application/json"),
                                 Header.string("service-model-type", op + "Request"),
                                 Header.string("operation", op)], payload)


def replies(conn):
    return Decoder().feed(conn.data_to_send())


def connected():
    conn = RpcConnection(lambda t: "Comp" if t == TOKEN else None)
    assert conn.receive_data(connect_frame()) == [Connected("Comp")]
    (ack,) = replies(conn)
    assert (ack.value(":message-type"), ack.value(":message-flags"), ack.value(":stream-id")) == (5, 1, 0)
    return conn


def test_handshake_accepts_known_token():
    conn = connected()
    assert conn.principal == "Comp" and conn.state == "connected"


@pytest.mark.parametrize("data,reason", [
    (connect_frame(token="WRONG"), "unknown authToken"),
    (connect_frame(version="0.2.0"), ":version"),
    (connect_frame(version=None), ":version"),
    (frame(4, extra=[Header.string(":version", "0.1.0")], payload=b"not json"), "not JSON"),
])
def test_handshake_rejects(data, reason):
    conn = RpcConnection(lambda t: "Comp" if t == TOKEN else None)
    (ev,) = conn.receive_data(data)
    assert isinstance(ev, Rejected) and reason in ev.reason
    (ack,) = replies(conn)
    assert ack.value(":message-type") == 5 and ack.value(":message-flags") == 0
    assert conn.receive_data(request(1)) == []  # nothing more is served


def protocol_error(conn, data, match):
    events = conn.receive_data(data)
    assert isinstance(events[-1], Close) and match in events[-1].reason
    out = replies(conn)
    assert out[-1].value(":message-type") == 6
    assert match in json.loads(out[-1].payload)["message"]
    assert conn.state == "closed"
    assert conn.receive_data(request(9)) == []


def test_first_frame_must_be_connect():
    protocol_error(RpcConnection(lambda t: None), request(1), "first message must be CONNECT")


def test_rpc_headers_must_be_int32():
    conn = connected()
    bad = encode(Frame([Header.int32(":message-type", 2), Header.int32(":message-flags", 0),
                        Header(":stream-id", HeaderType.INT64, 0)]))
    protocol_error(conn, bad, "missing required fields")


@pytest.mark.parametrize("data,match", [
    (frame(0, 0, 0), "stream id >= 1"),
    (frame(2, 0, 3), "needs stream id 0"),
    (frame(8), "unknown message type 8"),
    (connect_frame(), "CONNECT received"),
    (frame(5, 1), "CONNECT_ACK is not a client message"),
    (frame(0, 0, 1), "needs an 'operation'"),
    (b"\x00" * 16, "malformed message"),
])
def test_protocol_errors(data, match):
    protocol_error(connected(), data, match)


def test_stream_ids_strictly_increase_and_stale_ids_are_ignored():
    conn = connected()
    assert conn.receive_data(request(1) + request(2)) == [
        Request(1, "aws.greengrass#PublishToTopic", "aws.greengrass#PublishToTopicRequest", b"{}"),
        Request(2, "aws.greengrass#PublishToTopic", "aws.greengrass#PublishToTopicRequest", b"{}")]
    assert conn.send_message(1, "aws.greengrass#PublishToTopicResponse", b"{}", terminate=True)
    assert conn.receive_data(frame(0, 2, 1)) == []         # TERMINATE on a stream the server closed: tolerated
    assert conn.receive_data(request(1)) == []             # an old id never opens a new stream
    assert conn.receive_data(frame(0, 2, 2)) == [StreamClosed(2)]
    assert conn.open_streams == set()
    assert isinstance(conn.receive_data(request(5))[0], Request)  # gaps are allowed, only increase is required


def test_request_carrying_terminate_runs_nothing():
    conn = connected()
    assert conn.receive_data(request(1, flags=2)) == []
    assert conn.last_stream_id == 1 and conn.open_streams == set()


def test_ping_is_echoed_without_rpc_headers():
    conn = connected()
    assert conn.receive_data(frame(2, extra=[Header.string("note", "hi"), Header("n", HeaderType.INT64, 5)],
                                   payload=b"data")) == []
    (pong,) = replies(conn)
    assert pong.value(":message-type") == 3 and pong.payload == b"data"
    assert pong.value("note") == "hi" and pong.header("n").type == HeaderType.INT64


def test_response_shapes_and_flags():
    conn = connected()
    conn.receive_data(request(1) + request(2) + request(3))
    conn.data_to_send()
    assert conn.send_message(1, "aws.greengrass#SubscribeToTopicResponse", b"{}")
    assert conn.send_message(1, "aws.greengrass#SubscriptionResponseMessage", b'{"a":1}')
    assert conn.send_error(2, "aws.greengrass#UnauthorizedError", b'{"message":"no"}')
    assert conn.close_stream(1)
    assert not conn.send_message(1, "x", b"{}")  # closed: nothing is sent on it any more
    assert not conn.send_error(2, "x", b"{}")
    out = replies(conn)
    assert [(f.value(":message-type"), f.value(":message-flags"), f.value(":stream-id"),
             f.value("service-model-type"), f.value(":content-type")) for f in out] == [
        (0, 0, 1, "aws.greengrass#SubscribeToTopicResponse", "application/json"),
        (0, 0, 1, "aws.greengrass#SubscriptionResponseMessage", "application/json"),
        (1, 2, 2, "aws.greengrass#UnauthorizedError", "application/json"),
        (0, 2, 1, None, None),
    ]
    assert conn.open_streams == {3}
    assert conn.connection_lost() == [3]


def test_earlier_frames_in_a_chunk_are_handled_before_garbage():
    conn = connected()
    events = conn.receive_data(request(1) + b"\x00\x00\x00\x10" + b"\xff" * 12)
    assert isinstance(events[0], Request) and isinstance(events[-1], Close)


def test_open_stream_limit():
    conn = RpcConnection(lambda t: "Comp", max_open_streams=2)
    conn.receive_data(connect_frame())
    events = conn.receive_data(request(1) + request(2) + request(3))
    assert isinstance(events[-1], Close) and "more than 2 open streams" in events[-1].reason


def test_client_error_frames_close_quietly():
    conn = connected()
    (ev,) = conn.receive_data(frame(6))
    assert isinstance(ev, Close)
    assert conn.data_to_send() == b""


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

any_header = st.builds(
    lambda name, kind, n: {
        0: Header.int32(name, n), 1: Header.string(name, str(n)), 2: Header(name, HeaderType.INT64, n),
        3: Header.bool(name, n % 2 == 0)}[kind],
    st.sampled_from([":message-type", ":message-flags", ":stream-id", "operation", ":version", "x"]),
    st.integers(0, 3), st.integers(-2, 9))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(
    st.builds(lambda mt, fl, sid: frame(mt, fl, sid), st.integers(0, 9), st.integers(0, 3), st.integers(-1, 6)),
    st.builds(lambda sid, fl: request(sid, flags=fl), st.integers(1, 8), st.sampled_from([0, 2])),
    st.builds(lambda hs, p: encode(Frame(hs, p)), st.lists(any_header, max_size=6), st.binary(max_size=20)),
    st.binary(max_size=30),
), max_size=12))
def test_any_frame_sequence_yields_events_and_valid_output(chunks):
    conn = RpcConnection(lambda t: "Comp" if t == TOKEN else None)
    events = conn.receive_data(connect_frame())
    for chunk in chunks:
        events += conn.receive_data(chunk)
        for ev in events:
            if isinstance(ev, Request):  # answer like a server would, possibly after the stream closed
                conn.send_message(ev.stream_id, "aws.greengrass#XResponse", b"{}", terminate=True)
        events = []
        out = Decoder().feed(conn.data_to_send())  # whatever the server sends is valid eventstream
        for f in out:
            assert f.header(":message-type").type == HeaderType.INT32
        if conn.state == "closed":
            assert conn.receive_data(request(99)) == []
            break
    assert conn.open_streams <= set(range(1, 9))


def test_before_connect_only_small_frames_are_read():
    from ggdefender.local.nucleus.rpc import MAX_CONNECT_BYTES

    big = request(1, payload=b"x" * MAX_CONNECT_BYTES)
    conn = RpcConnection(lambda t: "Comp" if t == TOKEN else None)
    (ev,) = conn.receive_data(big[:12])  # the prelude alone is enough to refuse it, nothing is buffered
    assert isinstance(ev, Close) and "exceeds the limit" in ev.reason
    (err,) = replies(conn)
    assert err.value(":message-type") == 6
    # once authenticated, the full frame size applies
    conn = connected()
    assert [type(e) for e in conn.receive_data(big)] == [Request]

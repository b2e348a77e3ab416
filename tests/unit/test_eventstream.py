"""The eventstream codec against the reference bytes, every header type, corruption, truncation, limits."""

import struct
import uuid
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggdefender import eventstream as es
from ggdefender.eventstream import Decoder, Frame, Header, HeaderType, ProtocolError, encode

# The real client's CONNECT frame and the accepting CONNECT_ACK (wire protocol reference, section 3.4).
CONNECT_HEX = (
    "0000007900000048e9e79475"
    "083a76657273696f6e0700053" "02e312e30"
    "0d3a6d6573736167652d74797065040000000" "4"
    "0e3a6d6573736167652d666c616773040000000" "0"
    "0a3a73747265616d2d6964040000000" "0"
)
CONNECT_PAYLOAD = b'{"authToken": "ABCDEF0123456789"}'


def rpc_headers(mt=4, flags=0, sid=0):
    return [Header.int32(":message-type", mt), Header.int32(":message-flags", flags), Header.int32(":stream-id", sid)]


def test_connect_frame_matches_captured_bytes():
    frame = Frame([Header.string(":version", "0.1.0")] + rpc_headers(), CONNECT_PAYLOAD)
    data = encode(frame)
    assert data.hex().startswith(CONNECT_HEX)
    assert len(data) == 121
    assert data[-4:].hex() == "ad04c040"
    (decoded,) = Decoder().feed(data)
    assert decoded == frame
    assert decoded.value(":VERSION") == "0.1.0"  # case-insensitive lookup


def test_connect_ack_matches_captured_bytes():
    data = encode(Frame(rpc_headers(5, 1, 0)))
    assert len(data) == 71
    assert data[:12].hex() == "0000004700000037374cfe3f"
    assert data[-4:].hex() == "e237e27d"


EVERY_TYPE = [
    Header("t", HeaderType.BOOL_TRUE, True),
    Header("f", HeaderType.BOOL_FALSE, False),
    Header("b", HeaderType.BYTE, -128),
    Header("s", HeaderType.INT16, -32768),
    Header("i", HeaderType.INT32, 2**31 - 1),
    Header("l", HeaderType.INT64, -(2**63)),
    Header("buf", HeaderType.BYTES, b"\x00\xff" * 10),
    Header("str", HeaderType.STRING, "héllo ✓"),
    Header("ts", HeaderType.TIMESTAMP, 1700000000),
    Header("id", HeaderType.UUID, uuid.UUID("12345678-1234-5678-1234-567812345678")),
]


@pytest.mark.parametrize("header", EVERY_TYPE, ids=lambda h: h.type.name)
def test_every_header_type_round_trips(header):
    frame = Frame([header], b"payload")
    (decoded,) = Decoder().feed(encode(frame))
    assert decoded.headers == [header]
    assert type(decoded.headers[0].value) is type(header.value)


def test_all_types_in_one_frame_any_chunking():
    frame = Frame(EVERY_TYPE, b"x" * 1000)
    data = encode(frame) * 3
    for chunk in (1, 7, 100, len(data)):
        d = Decoder()
        out = []
        for i in range(0, len(data), chunk):
            out += d.feed(data[i:i + chunk])
        assert out == [frame] * 3
        assert d.buffered == 0


def test_truncated_input_waits_for_more():
    data = encode(Frame(rpc_headers(), b"abc"))
    d = Decoder()
    assert d.feed(data[:-1]) == []
    assert d.buffered == len(data) - 1
    assert d.feed(data[-1:]) == [Frame(rpc_headers(), b"abc")]


@pytest.mark.parametrize("offset,expected", [(5, "prelude CRC"), (20, "message CRC"), (-1, "message CRC"),
                                             (9, "prelude CRC")])
def test_crc_corruption_is_detected(offset, expected):
    data = bytearray(encode(Frame(rpc_headers(), b"hello")))
    data[offset] ^= 0x01
    with pytest.raises(ProtocolError, match=expected):
        Decoder().feed(bytes(data))


def test_decoder_refuses_input_after_an_error_and_keeps_earlier_frames():
    good = encode(Frame(rpc_headers(), b"ok"))
    bad = bytearray(good)
    bad[-1] ^= 0xFF
    d = Decoder()
    with pytest.raises(ProtocolError) as info:
        d.feed(good + bytes(bad))
    assert info.value.frames == [Frame(rpc_headers(), b"ok")]
    with pytest.raises(ProtocolError, match="already failed"):
        d.feed(good)


def raw_message(total, hlen, body=b""):
    prelude = struct.pack(">II", total, hlen)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + body
    return msg + struct.pack(">I", zlib.crc32(msg))


def test_oversize_is_rejected_from_the_prelude_alone():
    d = Decoder(max_message_bytes=1024)
    prelude = struct.pack(">II", 2048, 0)
    with pytest.raises(ProtocolError, match="exceeds the limit of 1024"):
        d.feed(prelude + struct.pack(">I", zlib.crc32(prelude)))


def test_default_limit_is_24_mib():
    prelude = struct.pack(">II", 24 * 1024 * 1024 + 1, 0)
    with pytest.raises(ProtocolError, match="exceeds"):
        Decoder().feed(prelude + struct.pack(">I", zlib.crc32(prelude)))
    with pytest.raises(ValueError):
        Decoder(max_message_bytes=25 * 1024 * 1024)


def test_too_small_total_and_headers_length_overflow():
    with pytest.raises(ProtocolError, match="below the minimum"):
        Decoder().feed(raw_message(15, 0)[:12] + b"\x00" * 8)
    with pytest.raises(ProtocolError, match="headers length"):
        Decoder().feed(raw_message(20, 5, b"abcd"))


def test_smallest_message_is_sixteen_bytes():
    (frame,) = Decoder().feed(raw_message(16, 0))
    assert frame.headers == [] and frame.payload == b""


def header_block_message(block: bytes, payload: bytes = b"") -> bytes:
    return es.encode_raw(block, payload)


@pytest.mark.parametrize("block,problem", [
    (b"\x00", "name is empty"),
    (b"\x05ab", "truncated inside a header name"),
    (b"\x01a\x04\x00\x00", "int32 value truncated"),
    (b"\x01a\x07\x00\x05ab", "value truncated"),
    (b"\x01a\x07\x80\x00", "exceeds 32767"),
    (b"\x01a\x07\x00\x02\xff\xfe", "not valid UTF-8"),
    (b"\x02\xff\xfe\x00", "name is not valid UTF-8"),
    (b"\x01a\x0a", "unknown value type 10"),
    (b"\x01a\x09" + b"\x00" * 15, "UUID value truncated"),
    (b"\x01a\x05\x00", "8-byte value truncated"),
    (b"\x01a\x03\x00", "int16 value truncated"),
    (b"\x01a\x02", "byte value truncated"),
])
def test_bad_header_blocks_name_the_problem(block, problem):
    with pytest.raises(ProtocolError, match=problem):
        Decoder().feed(header_block_message(block))


def test_header_count_limit():
    ok = b"\x01a\x00" * 1024
    (frame,) = Decoder().feed(header_block_message(ok))
    assert len(frame.headers) == 1024
    with pytest.raises(ProtocolError, match="more than 1024 headers"):
        Decoder().feed(header_block_message(ok + b"\x01a\x00"))


def test_value_and_name_limits_on_encode():
    Decoder().feed(encode(Frame([Header.string("a", "x" * 32767)])))
    with pytest.raises(ValueError, match="32767"):
        encode(Frame([Header.string("a", "x" * 32768)]))
    with pytest.raises(ValueError, match="1..255"):
        encode(Frame([Header.string("a" * 256, "x")]))
    with pytest.raises(ValueError, match="at most 1024"):
        encode(Frame([Header.bool("a", True)] * 1025))


def test_first_header_wins_and_repr():
    f = Frame([Header.int32("X", 1), Header.int32("x", 2)])
    assert f.value("x") == 1
    assert "X=1" in repr(f)


# -- property tests --------------------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=20).filter(lambda s: len(s.encode()) <= 255)
header_st = st.one_of(
    st.builds(Header.bool, names, st.booleans()),
    st.builds(lambda n, v: Header(n, HeaderType.BYTE, v), names, st.integers(-128, 127)),
    st.builds(lambda n, v: Header(n, HeaderType.INT16, v), names, st.integers(-(2**15), 2**15 - 1)),
    st.builds(lambda n, v: Header(n, HeaderType.INT32, v), names, st.integers(-(2**31), 2**31 - 1)),
    st.builds(lambda n, v: Header(n, HeaderType.INT64, v), names, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda n, v: Header(n, HeaderType.TIMESTAMP, v), names, st.integers(-(2**63), 2**63 - 1)),
    st.builds(lambda n, v: Header(n, HeaderType.BYTES, v), names, st.binary(max_size=300)),
    st.builds(lambda n, v: Header(n, HeaderType.STRING, v), names, st.text(max_size=100)),
    st.builds(lambda n, v: Header(n, HeaderType.UUID, v), names, st.uuids()),
)
frame_st = st.builds(Frame, st.lists(header_st, max_size=12), st.binary(max_size=2000))


@settings(max_examples=300, deadline=None)
@given(st.lists(frame_st, min_size=1, max_size=4), st.integers(1, 64))
def test_round_trip_property(frames, chunk):
    data = b"".join(encode(f) for f in frames)
    d = Decoder()
    out = []
    for i in range(0, len(data), chunk):
        out += d.feed(data[i:i + chunk])
    assert out == frames


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_only_raise_protocol_error(data):
    try:
        Decoder(max_message_bytes=4096).feed(data)
    except ProtocolError:
        pass


@settings(max_examples=500, deadline=None)
@given(frame_st, st.data())
def test_any_single_bit_flip_is_detected_or_harmless(frame, data):
    raw = bytearray(encode(frame))
    bit = data.draw(st.integers(0, len(raw) * 8 - 1))
    raw[bit // 8] ^= 1 << (bit % 8)
    try:
        out = Decoder().feed(bytes(raw))
    except ProtocolError:
        return
    # CRC-32 catches every single-bit error, so the only way through is a prelude that now asks for more
    assert out == []

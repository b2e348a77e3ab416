"""`application/vnd.amazon.eventstream` framing, sans-IO: bytes in, frames out; frames in, bytes out.

Layout (big-endian): total_length u32 | headers_length u32 | prelude_crc u32 | headers | payload |
message_crc u32, CRC-32 (zlib) over [0, 8) and over everything before the message CRC. Each header is
name_len u8 | name | type u8 | value, with the ten value types of `HeaderType`.
Limits follow the aws-c-event-stream client; the total size can be lowered (the server does).
"""

from __future__ import annotations

import struct
import uuid
import zlib
from enum import IntEnum
from typing import Any, Iterable, NamedTuple, Optional

MAX_MESSAGE_BYTES = 24 * 1024 * 1024
MIN_MESSAGE_BYTES = 16
PRELUDE_BYTES = 12
MAX_HEADERS = 1024
MAX_HEADER_NAME_BYTES = 255
MAX_HEADER_VALUE_BYTES = 32767

_PRELUDE = struct.Struct(">III")
_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")
_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_crc32 = zlib.crc32


class ProtocolError(Exception):
    """Bytes that are not a valid eventstream message; the message names the problem.

    `frames` holds the valid frames decoded from the same feed() before the bad bytes."""

    def __init__(self, message: str, frames: Optional[list] = None):
        super().__init__(message)
        self.frames = frames or []


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTES = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


class Header(NamedTuple):
    name: str
    type: HeaderType
    value: Any  # bool | int | bytes | str | uuid.UUID

    # constructors that make the wire type explicit
    @classmethod
    def bool(cls, name: str, value: bool) -> "Header":
        return cls(name, HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE, bool(value))

    @classmethod
    def int32(cls, name: str, value: int) -> "Header":
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def string(cls, name: str, value: str) -> "Header":
        return cls(name, HeaderType.STRING, value)


class Frame:
    """One eventstream message. Header lookups by name are case-insensitive (first occurrence wins)."""

    __slots__ = ("headers", "payload", "_index")

    def __init__(self, headers: Iterable[Header] = (), payload: bytes = b""):
        self.headers = list(headers)
        self.payload = bytes(payload)
        self._index: Optional[dict[str, Header]] = None

    def index(self) -> dict[str, Header]:
        """Headers by lower-cased name (first occurrence wins); built once per frame."""
        index = self._index
        if index is None:
            index = {}
            for h in self.headers:
                key = h.name.lower()
                if key not in index:
                    index[key] = h
            self._index = index
        return index

    def header(self, name: str) -> Optional[Header]:
        return self.index().get(name.lower())

    def value(self, name: str, default: Any = None) -> Any:
        h = self.header(name)
        return default if h is None else h.value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Frame) and self.headers == other.headers and self.payload == other.payload

    def __repr__(self) -> str:
        shown = ", ".join(f"{h.name}={h.value!r}" for h in self.headers)
        return f"Frame([{shown}], payload={len(self.payload)} bytes)"


# -- encoding ---------------------------------------------------------------------------------------------

def _encode_header(h: Header, out: bytearray) -> None:
    name = h.name.encode("utf-8")
    if not 1 <= len(name) <= MAX_HEADER_NAME_BYTES:
        raise ValueError(f"header name {h.name!r}: must be 1..{MAX_HEADER_NAME_BYTES} bytes")
    out.append(len(name))
    out += name
    t = HeaderType(h.type)
    v = h.value
    out.append(t)
    if t is HeaderType.BOOL_TRUE or t is HeaderType.BOOL_FALSE:
        return
    if t is HeaderType.BYTE:
        out += _I8.pack(v)
    elif t is HeaderType.INT16:
        out += _I16.pack(v)
    elif t is HeaderType.INT32:
        out += _I32.pack(v)
    elif t is HeaderType.INT64 or t is HeaderType.TIMESTAMP:
        out += _I64.pack(v)
    elif t is HeaderType.BYTES or t is HeaderType.STRING:
        data = v.encode("utf-8") if t is HeaderType.STRING else bytes(v)
        if len(data) > MAX_HEADER_VALUE_BYTES:
            raise ValueError(f"header {h.name!r}: value longer than {MAX_HEADER_VALUE_BYTES} bytes")
        out += _U16.pack(len(data))
        out += data
    elif t is HeaderType.UUID:
        raw = v.bytes if isinstance(v, uuid.UUID) else bytes(v)
        if len(raw) != 16:
            raise ValueError(f"header {h.name!r}: UUID must be 16 bytes")
        out += raw


def encode_headers(headers: Iterable[Header]) -> bytes:
    """The header block alone: lets hot paths pre-encode constant headers once."""
    out = bytearray()
    count = 0
    for h in headers:
        _encode_header(h, out)
        count += 1
    if count > MAX_HEADERS:
        raise ValueError(f"{count} headers: at most {MAX_HEADERS} allowed")
    return bytes(out)


def encode_raw(header_block: bytes, payload: bytes = b"") -> bytes:
    """A message from an already encoded header block and a payload."""
    total = 16 + len(header_block) + len(payload)
    if total > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {total} bytes exceeds {MAX_MESSAGE_BYTES}")
    prelude = _PRELUDE.pack(total, len(header_block), 0)[:8]
    prelude += _U32.pack(_crc32(prelude))
    crc = _crc32(payload, _crc32(header_block, _crc32(prelude)))
    return b"".join((prelude, header_block, payload, _U32.pack(crc)))


def encode(frame: Frame) -> bytes:
    return encode_raw(encode_headers(frame.headers), frame.payload)


# -- decoding ---------------------------------------------------------------------------------------------

_new_header = tuple.__new__  # skips NamedTuple.__new__'s Python-level argument handling on the hot path
_T = list(HeaderType)
_T_BOOL_TRUE, _T_BOOL_FALSE, _T_BYTE, _T_INT16, _T_INT32, _T_INT64, _T_BYTES, _T_STRING, _T_TIMESTAMP, _T_UUID = _T
_name_cache: dict[bytes, str] = {}  # header names repeat on every frame; bounded below


def decode_headers(buf: memoryview | bytes) -> list[Header]:
    """Parse a complete header block; ProtocolError naming the problem."""
    block = bytes(buf)
    headers: list[Header] = []
    append = headers.append
    names = _name_cache
    i = 0
    n = len(block)
    while i < n:
        if len(headers) >= MAX_HEADERS:
            raise ProtocolError(f"more than {MAX_HEADERS} headers")
        name_len = block[i]
        i += 1
        if name_len == 0:
            raise ProtocolError("header name is empty")
        end = i + name_len
        if end + 1 > n:
            raise ProtocolError("header block truncated inside a header name")
        raw_name = block[i:end]
        name = names.get(raw_name)
        if name is None:
            try:
                name = raw_name.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError("header name is not valid UTF-8") from None
            if len(names) < 256:
                names[raw_name] = name
        t = block[end]
        i = end + 1
        if t == 4:  # int32 first: the three RPC headers use it
            if i + 4 > n:
                raise ProtocolError(f"header {name!r}: int32 value truncated")
            append(_new_header(Header, (name, _T_INT32, _I32.unpack_from(block, i)[0])))
            i += 4
        elif t == 7 or t == 6:
            if i + 2 > n:
                raise ProtocolError(f"header {name!r}: value length truncated")
            vlen = (block[i] << 8) | block[i + 1]
            i += 2
            if vlen > MAX_HEADER_VALUE_BYTES:
                raise ProtocolError(f"header {name!r}: value of {vlen} bytes exceeds {MAX_HEADER_VALUE_BYTES}")
            if i + vlen > n:
                raise ProtocolError(f"header {name!r}: value truncated")
            raw = block[i:i + vlen]
            i += vlen
            if t == 7:
                try:
                    append(_new_header(Header, (name, _T_STRING, raw.decode("utf-8"))))
                except UnicodeDecodeError:
                    raise ProtocolError(f"header {name!r}: string value is not valid UTF-8") from None
            else:
                append(_new_header(Header, (name, _T_BYTES, raw)))
        elif t == 0:
            append(_new_header(Header, (name, _T_BOOL_TRUE, True)))
        elif t == 1:
            append(_new_header(Header, (name, _T_BOOL_FALSE, False)))
        elif t == 2:
            if i + 1 > n:
                raise ProtocolError(f"header {name!r}: byte value truncated")
            append(_new_header(Header, (name, _T_BYTE, _I8.unpack_from(block, i)[0])))
            i += 1
        elif t == 3:
            if i + 2 > n:
                raise ProtocolError(f"header {name!r}: int16 value truncated")
            append(_new_header(Header, (name, _T_INT16, _I16.unpack_from(block, i)[0])))
            i += 2
        elif t == 5 or t == 8:
            if i + 8 > n:
                raise ProtocolError(f"header {name!r}: 8-byte value truncated")
            append(_new_header(Header, (name, _T[t], _I64.unpack_from(block, i)[0])))
            i += 8
        elif t == 9:
            if i + 16 > n:
                raise ProtocolError(f"header {name!r}: UUID value truncated")
            append(_new_header(Header, (name, _T_UUID, uuid.UUID(bytes=block[i:i + 16]))))
            i += 16
        else:
            raise ProtocolError(f"header {name!r}: unknown value type {t}")
    return headers


class Decoder:
    """Incremental decoder: feed() any chunking of the byte stream, get whole frames back.

    After a ProtocolError the stream cannot be resynchronised; the decoder refuses further input.
    """

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES):
        if not MIN_MESSAGE_BYTES <= max_message_bytes <= MAX_MESSAGE_BYTES:
            raise ValueError(f"max_message_bytes must be within {MIN_MESSAGE_BYTES}..{MAX_MESSAGE_BYTES}")
        self.max_message_bytes = max_message_bytes
        self._buf = bytearray()
        self._failed: Optional[str] = None

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Frame]:
        if self._failed is not None:
            raise ProtocolError(f"decoder already failed: {self._failed}")
        buf = self._buf
        buf += data
        frames: list[Frame] = []
        pos = 0
        n = len(buf)
        try:
            while n - pos >= PRELUDE_BYTES:
                total, hlen, pcrc = _PRELUDE.unpack_from(buf, pos)
                if _crc32(memoryview(buf)[pos:pos + 8]) != pcrc:
                    raise ProtocolError("prelude CRC mismatch")
                if total < MIN_MESSAGE_BYTES:
                    raise ProtocolError(f"total length {total} is below the minimum of {MIN_MESSAGE_BYTES}")
                if total > self.max_message_bytes:
                    raise ProtocolError(f"total length {total} exceeds the limit of {self.max_message_bytes} bytes")
                if hlen > total - MIN_MESSAGE_BYTES:
                    raise ProtocolError(f"headers length {hlen} does not fit in a message of {total} bytes")
                if n - pos < total:
                    break
                view = memoryview(buf)
                end = pos + total
                (mcrc,) = _U32.unpack_from(buf, end - 4)
                if _crc32(view[pos:end - 4]) != mcrc:
                    raise ProtocolError("message CRC mismatch")
                hstart = pos + PRELUDE_BYTES
                headers = decode_headers(view[hstart:hstart + hlen]) if hlen else []
                payload = bytes(view[hstart + hlen:end - 4])
                view.release()
                frames.append(Frame(headers, payload))
                pos = end
        except ProtocolError as exc:
            self._failed = str(exc)
            self._buf = bytearray()
            exc.frames = frames
            raise
        if pos:
            del buf[:pos]
        return frames

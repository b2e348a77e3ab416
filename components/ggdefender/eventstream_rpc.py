"""The eventstream-RPC layer both ends share: message types, flags, the version, and how an RPC frame is built.

Every RPC frame carries three int32 headers (``:message-type``, ``:message-flags``, ``:stream-id``); a stream
frame adds ``:content-type`` and ``service-model-type``. The server (`ggdefender local`'s nucleus emulation,
local/nucleus/rpc.py) and the pure-Python client (ipc_pure.py) build their frames here, on the codec in
eventstream.py, so both speak exactly the same bytes.
"""

from __future__ import annotations

import struct
from enum import IntEnum

from ggdefender.eventstream import Header, HeaderType, encode_headers, encode_raw

VERSION = "0.1.0"
CONTENT_TYPE_JSON = "application/json"
FLAG_CONNECTION_ACCEPTED = 0x1
FLAG_TERMINATE_STREAM = 0x2
MAX_STREAM_ID = 2**31 - 1
SHAPE_PREFIX = "aws.greengrass#"


class MessageType(IntEnum):
    APPLICATION_MESSAGE = 0
    APPLICATION_ERROR = 1
    PING = 2
    PING_RESPONSE = 3
    CONNECT = 4
    CONNECT_ACK = 5
    PROTOCOL_ERROR = 6
    INTERNAL_ERROR = 7


# -- pre-encoded header blocks (the hot path builds frames by concatenation) -------------------------------

def _int32(name: str) -> bytes:
    raw = name.encode()
    return bytes([len(raw)]) + raw + bytes([HeaderType.INT32])


I32 = struct.Struct(">i")
_MT = _int32(":message-type")
_MF = _int32(":message-flags")
_SID = _int32(":stream-id")
CT_JSON = encode_headers([Header.string(":content-type", CONTENT_TYPE_JSON)])


def _prefix(msg_type: int, flags: int) -> bytes:
    return _MT + I32.pack(msg_type) + _MF + I32.pack(flags) + _SID


PREFIX: dict[tuple[int, int], bytes] = {(int(t), f): _prefix(t, f) for t in MessageType for f in (0, 1, 2, 3)}
_shape_blocks: dict[str, bytes] = {}


def shape_block(model_type: str) -> bytes:
    """``:content-type`` application/json and ``service-model-type`` `model_type`, encoded (cached)."""
    block = _shape_blocks.get(model_type)
    if block is None:
        block = CT_JSON + encode_headers([Header.string("service-model-type", model_type)])
        if len(_shape_blocks) < 1024:  # shape names come from our own code, but stay bounded anyway
            _shape_blocks[model_type] = block
    return block


def frame_bytes(msg_type: int, flags: int, stream_id: int, extra_headers: bytes = b"", payload: bytes = b"") -> bytes:
    """One RPC frame: the three int32 headers, then `extra_headers` (an encoded block), then the payload."""
    return encode_raw(PREFIX[(msg_type, flags)] + I32.pack(stream_id) + extra_headers, payload)

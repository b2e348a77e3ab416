"""The wire format of the private relay between process A (`ggdefender run`) and process B (`ggdefender part
collector`), shared by both sides: A's RelayServer (supervisor/relay_server.py) and B's RelayClient
(collector/relay_client.py). See docs/architecture.md and docs/security.md.

Wire format: one JSON object per line (UTF-8), at most `MAX_REQUEST_LINE` bytes from B and `MAX_REPLY_LINE`
from A; binary payloads are base64.
  B -> A  {"id": n, "op": "publish_iot", "topic": t, "b64": ..., "qos": 0|1}
          {"id": n, "op": "subscribe_iot", "sub": s, "topic": t, "qos": 0|1}
          {"id": n, "op": "publish_local", "topic": t, "json": value} | {..., "b64": ...}
          {"id": n, "op": "subscribe_local", "sub": s, "topic": t}
          {"id": n, "op": "get_config", "keyPath": [...]}
          {"id": n, "op": "subscribe_config", "sub": s}
          {"id": n, "op": "unsubscribe", "sub": s}
          {"id": n, "op": "health", "path": p, "value": object|null}   (only B's own paths: health.check_from_part)
          {"id": n, "op": "mitigate", "request": {"requestId", "operation", "target", "profile", "behavior",
                                                  "violationId"}}   (detect.mitigation.check_request)
          {"id": n, "op": "subscribe_mitigation", "sub": s}          results of accepted mitigate calls
          {"id": n, "op": "subscribe_collect_now", "sub": s}         B's collector serves A's collect-now calls
          {"id": n, "op": "collect_result", "result": {"requestId", "event": "report-published", "reportId",
                                                       "topic"} | {"requestId", "event": "report-failed", "reason"}}
  A -> B  {"id": n, "ok": true, "result": value} | {"id": n, "ok": false, "kind": k, "error": message}
          {"ev": s, "topic": t, "json": value} | {"ev": s, "topic": t, "b64": ...} | {"ev": s, "path": [...]}
          {"ev": s, "result": {"requestId", "operation", "status", "statusDetails", "violationId"}}
          {"ev": s, "collect": requestId}                           a collect-now call of A (Ipc.collect_now)
The subscription id `s` is chosen by B, so an event can never arrive before B knows where it goes.
"""

from __future__ import annotations

import base64
import binascii
import json
import socket
from typing import Any, BinaryIO, Optional

from ggdefender.ipc import PublishRefused

FD_ENV = "GGDEFENDER_RELAY_FD"  # B's end of the socketpair, by number, in B's environment
MAX_REQUEST_LINE = 1 << 20  # reports are <= 128 KiB (base64: ~171 KiB); anything larger from B is hostile
MAX_REPLY_LINE = 16 << 20  # A is trusted, but a configuration reply is still bounded
MAX_PENDING_EVENTS = 1000  # per child: A's IPC callback thread must never block on a slow B
COLLECT_EVENTS = ("report-published", "report-failed")


class RelayError(RuntimeError):
    """A relayed call failed in process A; the message is A's."""


class RelayTimeout(RelayError, TimeoutError):
    """Process A did not answer in time: says nothing about the request itself (callers may retry it)."""


class RelayPublishRefused(RelayError, PublishRefused):
    """The nucleus refused process A's PublishToIoTCore for B (e.g. nucleus lite with no IoT Core connection):
    B's callers tell it from a refusal of the item itself by type (ipc.PublishRefused)."""


class RelayDenied(RelayError, PermissionError):
    """Process A's relay policy does not allow this call for process B."""


class MitigationRefused(RelayDenied):
    """Process A's MitigationGate refused a mitigation request; the message is the reason."""


def encode(obj: dict) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def read_line(stream: BinaryIO, limit: int) -> Optional[bytes]:
    """One line without its newline; None at EOF; ValueError when the line is over `limit` bytes."""
    line = stream.readline(limit + 1)
    if not line:
        return None
    if not line.endswith(b"\n"):
        if len(line) > limit:
            raise ValueError(f"line over {limit} bytes")
        return None  # EOF in the middle of a line: the peer is gone
    return line[:-1]



def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: Any) -> bytes:
    if not isinstance(text, str):
        raise ValueError("'b64' must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("'b64' is not valid base64") from None


def socket_pair():
    """(A's end, B's end): a connected stream socketpair; B's end is meant for `pass_fds`."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)

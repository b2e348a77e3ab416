"""Fuzz the local IPC server: random and mutated eventstream frames, checking for crashes and hangs.

Each connection sends CONNECT, then batches of plausible frames (requests for every operation with random
JSON, pings, stream closes, unknown operations) optionally followed by one hostile frame (bit flips and
insertions with both CRCs recomputed so the header and RPC parsers see them, broken CRCs, oversize or
truncated preludes, wrong header types, raw garbage), then a PING with a unique payload. The server must
answer that PING (no hang) or close the connection, and only after a hostile frame; everything it sends
must decode as valid eventstream. At the end a well-behaved connection must still be served.

    .venv/bin/python bench/ipc_fuzz.py [--frames 1000000] [--seed 1]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import os
import random
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zlib

from ggdefender.local.nucleus.core import Core
from ggdefender.eventstream import Decoder, Frame, Header, HeaderType, ProtocolError, encode
from ggdefender.local.nucleus.server import IpcServer

NS = "aws.greengrass#"
OPERATIONS = ["PublishToTopic", "SubscribeToTopic", "PublishToIoTCore", "SubscribeToIoTCore", "GetConfiguration",
              "UpdateConfiguration", "SubscribeToConfigurationUpdate", "UpdateState", "GetComponentDetails",
              "RestartComponent", "ListComponents", "PauseComponent", "NoSuchOperation"]
FUZZ_ACCESS = {
    "aws.greengrass.ipc.pubsub": {"f": {"operations": ["*"], "resources": ["fuzz/*"]}},
    "aws.greengrass.ipc.mqttproxy": {"f": {"operations": ["*"], "resources": ["fuzz/#"]}},
    "aws.greengrass.Cli": {"f": {"operations": ["*"], "resources": ["*"]}},
}


class Failure(AssertionError):
    pass


class ServerErrors(logging.Handler):
    """Collects ERROR records of the in-process local core while installed (a context manager).

    The server turns an exception in its own code into a closed connection, which looks like a close for
    cause from the socket; the log tells them apart, so any record here is a crash the fuzzer found."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[str] = []
        self._logger = logging.getLogger("ggdefender.local")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(self.format(record))

    def __enter__(self) -> "ServerErrors":
        self._logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self._logger.removeHandler(self)


def rpc(mt: int, flags: int, sid: int) -> list[Header]:
    return [Header.int32(":message-type", mt), Header.int32(":message-flags", flags), Header.int32(":stream-id", sid)]


class FrameFuzzer:
    """Generates frames for one connection (stream ids increase like the real client's)."""

    def __init__(self, rng: random.Random, token: str):
        self.rng = rng
        self.token = token
        self.next_stream = 1
        self.last_stream = 0

    # -- plausible values ----------------------------------------------------------------------------------
    def topic(self) -> str:
        r = self.rng
        levels = [r.choice(["fuzz", "fuzz", "a", "+", "#", "*", "$aws", "", "é", "x" * r.randint(0, 40)])
                  for _ in range(r.randint(1, 5))]
        if r.random() < 0.7:
            levels[0] = "fuzz"
        return "/".join(levels)

    def json_value(self, depth: int = 0):
        r = self.rng
        kind = r.randint(0, 7 if depth < 3 else 4)
        if kind == 0:
            return r.randint(-2**40, 2**40)
        if kind == 1:
            return r.random() * 1e6
        if kind == 2:
            return "".join(r.choice("abc/+#*$?é\u2603\"\\") for _ in range(r.randint(0, 12)))
        if kind == 3:
            return r.choice([True, False, None])
        if kind == 4:
            return []
        if kind == 5:
            return [self.json_value(depth + 1) for _ in range(r.randint(0, 4))]
        return {r.choice("ABCDEkey"): self.json_value(depth + 1) for _ in range(r.randint(0, 4))}

    def request_body(self, op: str):
        r = self.rng
        b64 = base64.b64encode(r.randbytes(r.randint(0, 300))).decode()
        if r.random() < 0.05:
            b64 = "not*base64"
        bodies = {
            "PublishToTopic": lambda: {"topic": self.topic(), "publishMessage": r.choice([
                {"jsonMessage": {"message": self.json_value()}}, {"binaryMessage": {"message": b64}},
                {}, {"jsonMessage": {}, "binaryMessage": {"message": b64}}, None])},
            "SubscribeToTopic": lambda: {"topic": self.topic(), "receiveMode": r.choice(
                [None, "RECEIVE_ALL_MESSAGES", "RECEIVE_MESSAGES_FROM_OTHERS", "BOGUS", 5])},
            "PublishToIoTCore": lambda: {"topicName": self.topic(), "qos": r.choice(["0", "1", "2", 1, None]),
                                         "payload": b64},
            "SubscribeToIoTCore": lambda: {"topicName": self.topic(), "qos": r.choice(["0", "1", None])},
            "GetConfiguration": lambda: {"componentName": r.choice([None, "fuzz.Component", "nope", 3]),
                                         "keyPath": r.choice([[], ["A"], ["A", "B"], "A", [1]])},
            "UpdateConfiguration": lambda: {"keyPath": r.choice([[], ["A"], ["accessControl"], ["A", "B"]]),
                                            "timestamp": r.choice([time.time(), 0, "x", None, 1e12]),
                                            "valueToMerge": r.choice([self.json_value(), {"K": self.json_value()}])},
            "SubscribeToConfigurationUpdate": lambda: {"componentName": r.choice([None, "fuzz.Component", "x"]),
                                                       "keyPath": r.choice([[], ["A"]])},
            "UpdateState": lambda: {"state": r.choice(["RUNNING", "ERRORED", "BROKEN", None])},
            "GetComponentDetails": lambda: {"componentName": r.choice(["fuzz.Component", "x", None])},
            "RestartComponent": lambda: {"componentName": r.choice(["fuzz.Component", "x", None])},
        }
        make = bodies.get(op)
        return make() if make else self.json_value()

    # -- frames --------------------------------------------------------------------------------------------
    def connect(self) -> bytes:
        return encode(Frame([Header.string(":version", "0.1.0")] + rpc(4, 0, 0),
                            json.dumps({"authToken": self.token}).encode()))

    def ping(self, payload: bytes) -> bytes:
        return encode(Frame(rpc(2, 0, 0), payload))

    def benign(self) -> bytes:
        r = self.rng
        roll = r.random()
        if roll < 0.75:
            op = r.choice(OPERATIONS)
            sid = self.last_stream = self.next_stream
            self.next_stream += r.choice([1, 1, 1, 2])
            body = self.request_body(op)
            payload = json.dumps(body).encode() if r.random() > 0.03 else r.randbytes(r.randint(0, 50))
            return encode(Frame([Header.string(":content-type", "application/json"),
                                 Header.string("service-model-type", NS + op + "Request"),
                                 Header.string("operation", NS + op)] + rpc(0, r.choice([0, 0, 0, 2]), sid), payload))
        if roll < 0.85:
            extra = [self._typed("h%d" % i, HeaderType(r.randint(0, 9))) for i in range(r.randint(0, 3))]
            return encode(Frame(extra + rpc(2, 0, 0), r.randbytes(r.randint(0, 64))))
        if roll < 0.95 and self.last_stream:
            sid = r.randint(1, self.last_stream)  # close (or write to) an existing or stale stream
            return encode(Frame(rpc(r.choice([0, 1]), r.choice([0, 2]), sid), b""))
        return encode(Frame(rpc(3, 0, 0), b"pong"))  # an unsolicited PING_RESPONSE

    def _typed(self, name: str, t: HeaderType) -> Header:
        r = self.rng
        value = {HeaderType.BOOL_TRUE: True, HeaderType.BOOL_FALSE: False, HeaderType.BYTE: r.randint(-128, 127),
                 HeaderType.INT16: r.randint(-2**15, 2**15 - 1), HeaderType.INT32: r.randint(-2**31, 2**31 - 1),
                 HeaderType.INT64: r.randint(-2**63, 2**63 - 1), HeaderType.BYTES: r.randbytes(r.randint(0, 20)),
                 HeaderType.STRING: "s" * r.randint(0, 20), HeaderType.TIMESTAMP: r.randint(0, 2**40),
                 HeaderType.UUID: uuid.UUID(bytes=r.randbytes(16))}[t]
        return Header(name, t, value)

    def hostile(self) -> bytes:
        r = self.rng
        base = bytearray(self.benign())
        kind = r.randint(0, 7)
        if kind <= 2:  # mutate headers/payload, then make both CRCs valid again
            body = base[12:-4]
            for _ in range(r.randint(1, 4)):
                op = r.randint(0, 2)
                pos = r.randint(0, max(0, len(body) - 1))
                if op == 0 and body:
                    body[pos] ^= 1 << r.randint(0, 7)
                elif op == 1:
                    body[pos:pos] = r.randbytes(r.randint(1, 4))
                elif body:
                    del body[pos:pos + r.randint(1, 4)]
            (hlen,) = struct.unpack_from(">I", base, 4)
            hlen = max(0, min(len(body), hlen + r.choice([0, 0, 0, -1, 1, r.randint(-50, 50)])))
            return _with_crcs(len(body), hlen, bytes(body))
        if kind == 3:  # a broken CRC
            base[r.randint(0, len(base) - 1)] ^= 1 << r.randint(0, 7)
            return bytes(base)
        if kind == 4:  # a prelude claiming something huge or tiny
            total = r.choice([0, 15, 2**31, 24 * 1024 * 1024 + 1, 2**32 - 1])
            prelude = struct.pack(">II", total, r.randint(0, 2**32 - 1))
            return prelude + struct.pack(">I", zlib.crc32(prelude))
        if kind == 5:  # the RPC headers with the wrong types
            t = r.choice([HeaderType.INT16, HeaderType.INT64, HeaderType.STRING])
            val = "0" if t == HeaderType.STRING else 0
            return encode(Frame([Header(":message-type", t, val), Header.int32(":message-flags", 0),
                                 Header.int32(":stream-id", 0)]))
        if kind == 6:  # a second CONNECT
            return self.connect()
        return r.randbytes(r.randint(1, 200))  # raw garbage


def _with_crcs(body_len: int, hlen: int, body: bytes) -> bytes:
    prelude = struct.pack(">II", body_len + 16, hlen)
    prelude += struct.pack(">I", zlib.crc32(prelude))
    msg = prelude + body
    return msg + struct.pack(">I", zlib.crc32(msg))


def _exchange(sock: socket.socket, data: bytes, decoder: Decoder, marker: bytes, timeout: float) -> str:
    """Send data while reading replies; 'pong' when the marker PING is answered, 'closed' on EOF."""
    sel = selectors.DefaultSelector()
    sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
    view = memoryview(data)
    deadline = time.monotonic() + timeout
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Failure(f"server did not answer within {timeout} s (hang)")
            for key, events in sel.select(remaining):
                if events & selectors.EVENT_WRITE and view:
                    try:
                        sent = sock.send(view[:65536])
                    except (BrokenPipeError, ConnectionResetError):
                        view = view[len(view):]
                        sel.modify(sock, selectors.EVENT_READ)
                        continue
                    view = view[sent:]
                    if not view:
                        sel.modify(sock, selectors.EVENT_READ)
                if events & selectors.EVENT_READ:
                    try:
                        chunk = sock.recv(1 << 20)
                    except ConnectionResetError:
                        chunk = b""
                    if not chunk:
                        return "closed"
                    try:
                        frames = decoder.feed(chunk)
                    except ProtocolError as exc:
                        raise Failure(f"the server sent an invalid frame: {exc}") from None
                    for f in frames:
                        if f.value(":message-type") == 3 and f.payload == marker:
                            return "pong"
    finally:
        sel.close()


def run_fuzz(socket_path: str, token: str, frames: int, *, seed: int = 1, timeout: float = 20.0,
             max_batch: int = 40) -> dict:
    """Send about `frames` frames; raises Failure on a hang, an invalid reply or an unexplained close."""
    rng = random.Random(seed)
    stats = {"frames": 0, "connections": 0, "closed_after_hostile": 0, "survived_hostile": 0, "pongs": 0,
             "bytes": 0}
    while stats["frames"] < frames:
        stats["connections"] += 1
        fuzzer = FrameFuzzer(rng, token)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(socket_path)
        sock.setblocking(False)
        decoder = Decoder()
        try:
            first = fuzzer.connect()
            state = "pong"
            batch_no = 0
            while state == "pong" and stats["frames"] < frames:
                batch_no += 1
                parts = [first] if batch_no == 1 else []
                parts += [fuzzer.benign() for _ in range(rng.randint(1, max_batch))]
                hostile = rng.random() < 0.3
                if hostile:
                    parts.append(fuzzer.hostile())
                marker = b"marker-%d-%d" % (stats["connections"], batch_no)
                parts.append(fuzzer.ping(marker))
                data = b"".join(parts)
                stats["frames"] += len(parts)
                stats["bytes"] += len(data)
                state = _exchange(sock, data, decoder, marker, timeout)
                if state == "pong":
                    stats["pongs"] += 1
                    if hostile:
                        stats["survived_hostile"] += 1
                elif hostile:
                    stats["closed_after_hostile"] += 1
                else:
                    raise Failure(f"connection {stats['connections']} closed without a hostile frame "
                                  f"(batch {batch_no})")
        finally:
            sock.close()
    return stats


# -- stand-alone benchmark -----------------------------------------------------------------------------------

WELL_BEHAVED = r'''
import json
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc import model as m
c = GreengrassCoreIPCClientV2()
c.publish_to_topic(topic="fuzz/ok", publish_message=m.PublishMessage(json_message=m.JsonMessage(message={"ok": 1})))
print(json.dumps({"value": c.get_configuration(key_path=["Stable"]).value}))
'''


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()

    core = Core(thing_name="fuzz")
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    with tempfile.TemporaryDirectory() as tmp:
        server = IpcServer(core, os.path.join(tmp, "ipc.socket"), max_frame_bytes=1024 * 1024)
        asyncio.run_coroutine_threadsafe(server.start(), loop).result(10)
        token = core.register_component("fuzz.Component", "1.0.0",
                                        {"A": 1, "Stable": "yes", "accessControl": FUZZ_ACCESS})
        t0 = time.perf_counter()
        failure = None
        try:
            with ServerErrors() as errors:
                stats = run_fuzz(server.socket_path, token, args.frames, seed=args.seed)
            if errors.records:
                failure = f"{len(errors.records)} server error(s), the first: {errors.records[0][-2000:]}"
        except Failure as exc:
            failure = str(exc)
            stats = {}
        elapsed = time.perf_counter() - t0
        env = dict(os.environ, SVCUID=token, AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT=server.socket_path)
        proc = subprocess.run([sys.executable, "-c", WELL_BEHAVED], env=env, capture_output=True, text=True,
                              timeout=60)
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    print(f"frames sent          : {stats.get('frames', 0):,} ({stats.get('bytes', 0) / 1e6:.1f} MB)")
    print(f"connections          : {stats.get('connections', 0):,}")
    print(f"batches answered     : {stats.get('pongs', 0):,}")
    print(f"closed after hostile : {stats.get('closed_after_hostile', 0):,}")
    print(f"hostile survived     : {stats.get('survived_hostile', 0):,} (mutation still valid)")
    print(f"elapsed              : {elapsed:.1f} s ({stats.get('frames', 0) / elapsed:,.0f} frames/s)")
    print(f"server thread alive  : {thread.is_alive() or 'stopped cleanly'}")
    ok_client = proc.returncode == 0
    print(f"well-behaved client  : {'served' if ok_client else 'FAILED: ' + proc.stderr[-500:]}")
    if failure:
        print(f"FAILURE              : {failure}")
    return 0 if ok_client and failure is None else 1


if __name__ == "__main__":
    sys.exit(main())

"""The pure-Python IPC client (ggdefender.ipc_pure) against a scripted nucleus built on the same codec: the exact
frames it sends, how it maps answers and modeled errors, its bounds (timeouts, frame size, unknown streams) and
what a dropped connection does to pending calls and streams. The same client against real cores:
tests/integration/local/test_ipc_clients.py and tests/integration/lite/test_lite_ipc_clients.py."""

import concurrent.futures
import json
import os
import socket
import tempfile
import threading
import time

import pytest

from ggdefender.eventstream import Decoder, Frame, Header, HeaderType
from ggdefender.eventstream_rpc import FLAG_CONNECTION_ACCEPTED, FLAG_TERMINATE_STREAM, MessageType, frame_bytes, \
    shape_block
from ggdefender.ipc import CLIENT_ENV, IpcClientChoiceError, choose_client
from ggdefender.ipc_client import (AccessDenied, ConnectionLost, MalformedAnswer, ResourceNotFoundError, ServiceError,
                                   UnauthorizedError)
from ggdefender.ipc_pure import PureClient

TOKEN = "ABCDEF0123456789"


class Nucleus:
    """One accepted connection, driven by the test: read the client's frames, write the answers it chooses."""

    def __init__(self):
        self._dir = tempfile.TemporaryDirectory(prefix="ggd-pure-")
        self.path = os.path.join(self._dir.name, "ipc.socket")
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.conn = None
        self.decoder = Decoder()
        self.frames: list = []

    def accept(self):
        self.conn, _ = self.listener.accept()
        self.conn.settimeout(10)
        return self

    def next_frame(self) -> Frame:
        while not self.frames:
            data = self.conn.recv(65536)
            assert data, "the client hung up"
            self.frames.extend(self.decoder.feed(data))
        return self.frames.pop(0)

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)

    def ack(self, accepted: bool = True) -> Frame:
        connect = self.next_frame()
        self.send(frame_bytes(MessageType.CONNECT_ACK, FLAG_CONNECTION_ACCEPTED if accepted else 0, 0))
        return connect

    def answer(self, stream_id: int, shape: str, body, *, terminate=True, error=False) -> None:
        kind = MessageType.APPLICATION_ERROR if error else MessageType.APPLICATION_MESSAGE
        self.send(frame_bytes(kind, FLAG_TERMINATE_STREAM if terminate else 0, stream_id,
                              shape_block("aws.greengrass#" + shape), json.dumps(body).encode()))

    def close(self):
        for s in (self.conn, self.listener):
            if s is not None:
                s.close()
        self._dir.cleanup()


@pytest.fixture
def nucleus():
    n = Nucleus()
    yield n
    n.close()


@pytest.fixture
def executor():
    ex = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    yield ex
    ex.shutdown(wait=False)


def connected(nucleus, executor, **kw):
    """A PureClient connected to the scripted nucleus (the accept and ACK run beside the client's connect)."""
    lost = []
    box = {}
    t = threading.Thread(target=lambda: box.update(connect=nucleus.accept().ack()))
    t.start()
    client = PureClient(on_disconnect=lost.append, executor=executor, socket_path=nucleus.path, auth_token=TOKEN,
                        timeout=kw.pop("timeout", 5), **kw)
    t.join(10)
    return client, lost, box["connect"]


def headers(frame: Frame) -> dict:
    return {h.name: (h.type, h.value) for h in frame.headers}


def call_in_thread(fn):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=run)
    t.start()
    return t, box


def test_connect_frame_is_the_one_awsiotsdk_sends(nucleus, executor):
    client, _, connect = connected(nucleus, executor)
    try:
        assert headers(connect) == {":version": (HeaderType.STRING, "0.1.0"),
                                    ":message-type": (HeaderType.INT32, MessageType.CONNECT),
                                    ":message-flags": (HeaderType.INT32, 0), ":stream-id": (HeaderType.INT32, 0)}
        assert json.loads(connect.payload) == {"authToken": TOKEN}  # and no :content-type on CONNECT
    finally:
        client.close()


def test_a_rejected_connect_is_access_denied(nucleus, executor):
    t = threading.Thread(target=lambda: nucleus.accept().ack(accepted=False))
    t.start()
    with pytest.raises(AccessDenied):
        PureClient(on_disconnect=lambda r: None, executor=executor, socket_path=nucleus.path, auth_token=TOKEN)
    t.join(10)


def test_no_connect_ack_is_a_timeout(nucleus, executor):
    t = threading.Thread(target=nucleus.accept)
    t.start()
    with pytest.raises(TimeoutError, match="no CONNECT_ACK"):
        PureClient(on_disconnect=lambda r: None, executor=executor, socket_path=nucleus.path, auth_token=TOKEN,
                   timeout=0.3)
    t.join(10)


def test_no_socket_and_no_environment_fail_at_once(executor, monkeypatch, tmp_path):
    with pytest.raises(OSError):
        PureClient(on_disconnect=lambda r: None, executor=executor, socket_path=str(tmp_path / "none"),
                   auth_token=TOKEN)
    monkeypatch.delenv("SVCUID", raising=False)
    with pytest.raises(KeyError, match="SVCUID"):
        PureClient(on_disconnect=lambda r: None, executor=executor, socket_path=str(tmp_path / "none"))


def test_requests_carry_operation_shape_and_json_and_ids_increase(nucleus, executor):
    client, _, _ = connected(nucleus, executor)
    try:
        t, box = call_in_thread(lambda: client.publish_to_iot_core("a/b", 1, b"\x00\x01"))
        req = nucleus.next_frame()
        assert headers(req) == {":message-type": (HeaderType.INT32, 0), ":message-flags": (HeaderType.INT32, 0),
                                ":stream-id": (HeaderType.INT32, 1),
                                ":content-type": (HeaderType.STRING, "application/json"),
                                "service-model-type": (HeaderType.STRING, "aws.greengrass#PublishToIoTCoreRequest"),
                                "operation": (HeaderType.STRING, "aws.greengrass#PublishToIoTCore")}
        assert json.loads(req.payload) == {"topicName": "a/b", "qos": "1", "payload": "AAE="}
        nucleus.answer(1, "PublishToIoTCoreResponse", {})
        t.join(10)
        assert box == {"value": None}

        t, box = call_in_thread(lambda: client.get_configuration(None, ["A"]))
        req = nucleus.next_frame()
        assert req.value(":stream-id") == 2 and json.loads(req.payload) == {"keyPath": ["A"]}
        nucleus.answer(2, "GetConfigurationResponse", {"componentName": "c", "value": {"A": 1}, "extra": True})
        t.join(10)
        assert box == {"value": {"A": 1}}  # unknown members ignored
    finally:
        client.close()


@pytest.mark.parametrize("shape, body, expected, text", [
    ("UnauthorizedError", {"message": "Not Authorized"}, UnauthorizedError, "Not Authorized"),
    ("ResourceNotFoundError", {"message": "Key not found", "resourceType": "x"}, ResourceNotFoundError,
     "Key not found"),
    ("ServiceError", {}, ServiceError, ""),  # lite's: no message at all
    ("SomeFutureError", {"message": "new"}, ServiceError, "aws.greengrass#SomeFutureError: new"),
])
def test_modeled_errors_are_the_classes_ipc_handles(nucleus, executor, shape, body, expected, text):
    client, lost, _ = connected(nucleus, executor)
    try:
        t, box = call_in_thread(lambda: client.update_state("RUNNING"))
        nucleus.next_frame()
        nucleus.answer(1, shape, body, error=True)
        t.join(10)
        assert type(box["error"]) is expected and box["error"].message == text
        assert lost == []  # a modeled error is the call's, not the connection's
    finally:
        client.close()


def test_an_error_without_a_shape_and_a_wrong_answer_type(nucleus, executor):
    client, _, _ = connected(nucleus, executor)
    try:
        t, box = call_in_thread(lambda: client.update_state("RUNNING"))
        nucleus.next_frame()
        nucleus.send(frame_bytes(MessageType.APPLICATION_ERROR, FLAG_TERMINATE_STREAM, 1, b"", b"InternalServerError"))
        t.join(10)
        assert isinstance(box["error"], ConnectionLost)  # as awsiotsdk: a bare stream close, Ipc reconnects

        t, box = call_in_thread(lambda: client.update_state("RUNNING"))
        nucleus.next_frame()
        nucleus.answer(2, "GetConfigurationResponse", {})
        t.join(10)
        assert isinstance(box["error"], MalformedAnswer) and "UpdateStateResponse" in str(box["error"])
    finally:
        client.close()


def test_a_call_without_answer_times_out_and_the_late_answer_is_ignored(nucleus, executor):
    client, lost, _ = connected(nucleus, executor, timeout=0.3)
    try:
        with pytest.raises(TimeoutError, match="UpdateState: no answer"):
            client.update_state("RUNNING")
        nucleus.next_frame()
        nucleus.answer(1, "UpdateStateResponse", {})  # too late: ignored
        t, box = call_in_thread(lambda: client.restart_component("x"))
        assert nucleus.next_frame().value(":stream-id") == 2
        nucleus.answer(2, "RestartComponentResponse", {"restartStatus": "SUCCEEDED"})
        t.join(10)
        assert box == {"value": "SUCCEEDED"} and lost == []
    finally:
        client.close()


def test_subscription_events_in_order_on_the_executor_then_a_server_close(nucleus, executor):
    client, _, _ = connected(nucleus, executor)
    got, closed = [], threading.Event()
    try:
        t, box = call_in_thread(lambda: client.subscribe_to_topic("t/1", lambda topic, p: got.append((topic, p)),
                                                                 closed.set))
        assert json.loads(nucleus.next_frame().payload) == {"topic": "t/1"}
        nucleus.answer(1, "SubscribeToTopicResponse", {}, terminate=False)
        t.join(10)
        for i in range(50):
            nucleus.answer(1, "SubscriptionResponseMessage",
                           {"jsonMessage": {"message": {"i": i}, "context": {"topic": "t/1"}}}, terminate=False)
        nucleus.answer(1, "SubscriptionResponseMessage",
                       {"binaryMessage": {"message": "AAE=", "context": {"topic": "t/1"}}}, terminate=False)
        nucleus.send(frame_bytes(MessageType.APPLICATION_MESSAGE, FLAG_TERMINATE_STREAM, 1))
        assert closed.wait(10)
        assert got == [("t/1", {"i": i}) for i in range(50)] + [("t/1", b"\x00\x01")]
    finally:
        client.close()


def test_closing_a_subscription_sends_terminate(nucleus, executor):
    client, _, _ = connected(nucleus, executor)
    closed = threading.Event()
    try:
        t, box = call_in_thread(lambda: client.subscribe_to_configuration_update(None, lambda p: None, closed.set))
        assert json.loads(nucleus.next_frame().payload) == {"keyPath": []}
        nucleus.answer(1, "SubscribeToConfigurationUpdateResponse", {}, terminate=False)
        t.join(10)
        box["value"].close()
        end = nucleus.next_frame()
        assert headers(end) == {":message-type": (HeaderType.INT32, 0),
                                ":message-flags": (HeaderType.INT32, FLAG_TERMINATE_STREAM),
                                ":stream-id": (HeaderType.INT32, 1)} and end.payload == b""
        assert closed.wait(10)
    finally:
        client.close()


def test_a_slow_handler_never_stalls_calls(nucleus, executor):
    client, _, _ = connected(nucleus, executor)
    release = threading.Event()
    try:
        t, box = call_in_thread(lambda: client.subscribe_to_iot_core("x", 1, lambda *a: release.wait(10),
                                                                     lambda: None))
        nucleus.next_frame()
        nucleus.answer(1, "SubscribeToIoTCoreResponse", {}, terminate=False)
        t.join(10)
        nucleus.answer(1, "IoTCoreMessage", {"message": {"topicName": "x", "payload": ""}}, terminate=False)
        t, box = call_in_thread(lambda: client.update_state("RUNNING"))  # while the handler blocks
        nucleus.next_frame()
        nucleus.answer(2, "UpdateStateResponse", {})
        t.join(5)
        assert box == {"value": None}
    finally:
        release.set()
        client.close()


@pytest.mark.parametrize("bad", ["too-big", "unknown-stream", "protocol-error", "garbage"])
def test_a_broken_connection_fails_pending_calls_ends_streams_and_tells_once(nucleus, executor, bad):
    client, lost, _ = connected(nucleus, executor, max_frame_bytes=4096)
    closed = threading.Event()
    try:
        t, box = call_in_thread(lambda: client.subscribe_to_topic("t", lambda *a: None, closed.set))
        nucleus.next_frame()
        nucleus.answer(1, "SubscribeToTopicResponse", {}, terminate=False)
        t.join(10)
        pending, pbox = call_in_thread(lambda: client.get_configuration(None, []))
        nucleus.next_frame()
        if bad == "too-big":
            nucleus.answer(2, "GetConfigurationResponse", {"value": {"x": "y" * 5000}})
        elif bad == "unknown-stream":
            nucleus.answer(7, "GetConfigurationResponse", {})
        elif bad == "protocol-error":
            nucleus.send(frame_bytes(MessageType.PROTOCOL_ERROR, 0, 0, b"", b'{"message": "bad"}'))
        else:
            nucleus.send(b"\x00" * 64)
        pending.join(10)
        assert isinstance(pbox["error"], ConnectionLost)
        assert closed.wait(10)
        deadline = time.monotonic() + 10
        while not lost and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(lost) == 1
        with pytest.raises(ConnectionLost):
            client.update_state("RUNNING")
    finally:
        client.close()
    assert len(lost) == 1  # our own close() is not reported


def test_the_nucleus_hanging_up_is_a_lost_connection(nucleus, executor):
    client, lost, _ = connected(nucleus, executor)
    nucleus.conn.close()
    nucleus.conn = None
    deadline = time.monotonic() + 10
    while not lost and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lost == ["the nucleus closed the connection"]
    client.close()


def test_the_client_choice(monkeypatch):
    assert choose_client({CLIENT_ENV: "pure"})[0] == "pure"
    assert choose_client({})[0] == "awsiotsdk"  # awscrt imports in the test venv
    assert choose_client({CLIENT_ENV: " AwsIotSdk "})[0] == "awsiotsdk"
    with pytest.raises(IpcClientChoiceError, match=r"GGDEFENDER_IPC_CLIENT='crt' is not an IPC client: use one of "
                                                    r"auto, awsiotsdk, pure"):
        choose_client({CLIENT_ENV: "crt"})
    monkeypatch.setitem(__import__("sys").modules, "awscrt", None)  # as where no awscrt wheel installs
    name, why = choose_client({})
    assert name == "pure" and "do not import" in why
    with pytest.raises(IpcClientChoiceError, match="awsiotsdk, but awsiotsdk/awscrt do not import"):
        choose_client({CLIENT_ENV: "awsiotsdk"})


def test_without_awscrt_and_awsiotsdk_ipc_imports_and_chooses_pure():
    # as on a device where neither installs: an import of either fails, everything IPC still loads
    import subprocess
    import sys

    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('awscrt', '_awscrt', 'awsiot'):\n"
            "            raise ImportError('not installed here: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            "from ggdefender.ipc import Ipc\n"
            "import ggdefender.ipc_pure, ggdefender.health\n"
            "ipc = Ipc()\n"
            "print(ipc.client_name, '|', ipc.client_reason)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={k: v for k, v in os.environ.items() if k != CLIENT_ENV})
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("pure | awsiotsdk/awscrt do not import (ImportError: not installed here: awscrt)")

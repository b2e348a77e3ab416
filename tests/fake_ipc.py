"""The tests' one fake IPC handle: implements both process ports of `ggdefender.ipc_port` (mypy checks it
against them in tests/unit/test_typecheck.py), records every call, delivers events to subscriptions and
injects the failures the tests need. Real protocol behaviour is covered by the integration tests."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional

from ggdefender.ipc import IpcUnavailable
from ggdefender.ipc_port import (CollectNowHandler, CollectorChannel, ConfigHandler, IotHandler, LocalHandler,
                                 MitigationHandler)

PUBLISHES = ("publish_iot", "publish_local")
READS = ("get_config", "component_details")


class FakeSubscription:
    def __init__(self, owner: "FakeIpc", kind: str, topic: str, handler: Callable[..., None]):
        self.owner, self.kind, self.topic, self.handler = owner, kind, topic, handler
        self.closed = False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.owner.subs.remove(self)


class FakeIpc:
    """`calls`: every call but subscriptions, as (operation, *arguments), in order; a call that fails is not
    recorded. `subs`: the live subscriptions. Failures: `fail_next` (the next call raises it, once), `down`
    (every publish and mitigate raises it while set), `failing[op]` (every call of `op` raises it),
    `fail_publishes` (the next N IoT Core publishes raise `publish_error`), `refuse_mitigation` (process A's
    gate says no, with this reason)."""

    def __init__(self, config: Optional[dict] = None, *, thing: str = "thing1",
                 down: Optional[BaseException] = None,
                 iot_responder: Optional[Callable[[str, Any], Optional[tuple]]] = None):
        """`config`: the component configuration get_config walks; `iot_responder(topic, payload)`: a service
        behind IoT Core whose (reply_topic, reply_payload) is delivered to IoT Core subscriptions."""
        self.config: dict = config if config is not None else {}
        self.thing = thing
        self.calls: list = []
        self.subs: list[FakeSubscription] = []
        self.recorded = threading.Condition()  # notified on every recorded call (see wait)
        self.fail_next: Optional[BaseException] = None
        self.down = down
        self.failing: dict[str, BaseException] = {}
        self.fail_publishes = 0
        self.publish_error: BaseException = RuntimeError("publish timed out")
        self.refuse_mitigation: Optional[str] = None
        self.iot_responder = iot_responder
        self.restart_status = "SUCCEEDED"
        self.iot_payload_limit = 128 * 1024 - 1
        self._collector: Optional[CollectorChannel] = None
        self._gone: list = []
        self.gone: Optional[str] = None
        self.retry_budget = 300.0

    # -- recording and failures ------------------------------------------------------------------------
    def _record(self, op: str, *args: Any) -> None:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        if self.down is not None and (op in PUBLISHES or op == "mitigate"):
            raise self.down
        if op in self.failing:
            raise self.failing[op]
        with self.recorded:
            self.calls.append((op, *args))
            self.recorded.notify_all()

    def wait(self, predicate: Callable[["FakeIpc"], bool], timeout: float = 30) -> None:
        """Until predicate(self) holds after some call (a bound for a loaded machine, not a speed claim)."""
        with self.recorded:
            assert self.recorded.wait_for(lambda: predicate(self), timeout), self.calls

    @property
    def changes(self) -> list:
        """The calls that ask the core to change something (all but reads)."""
        return [c for c in self.calls if c[0] not in READS]

    @property
    def iot(self) -> list:
        return [c[1:] for c in self.calls if c[0] == "publish_iot"]

    @property
    def local(self) -> list:
        return [c[1:] for c in self.calls if c[0] == "publish_local"]

    def on(self, name: str) -> list:
        """What went out on topic `name` (IoT Core payloads JSON-decoded), or the first argument of each
        call of operation `name` (e.g. "mitigate")."""
        out = []
        for c in self.calls:
            if c[0] in PUBLISHES and c[1] == name:
                out.append(json.loads(c[2]) if c[0] == "publish_iot" else c[2])
            elif c[0] == name:
                out.append(c[1])
        return out

    def _subscribe(self, kind: str, topic: str, handler: Callable[..., None]) -> FakeSubscription:
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        sub = FakeSubscription(self, kind, topic, handler)
        self.subs.append(sub)
        return sub

    def deliver(self, kind: str, topic: Optional[str], payload: Any) -> None:
        """An event from the core: handler(topic, payload) for "iot"/"local" subscriptions on `topic`,
        handler(payload) for "config", "mitigation" and "collect" ones (`topic` None: every one of `kind`)."""
        for sub in list(self.subs):
            if sub.kind == kind and (topic is None or sub.topic == topic):
                if kind in ("iot", "local"):
                    sub.handler(topic, payload)
                else:
                    sub.handler(payload)

    # -- IpcPort ---------------------------------------------------------------------------------------
    @property
    def thing_name(self) -> str:
        return self.thing

    def close(self) -> None:
        self._record("close")

    def on_gone(self, listener: Callable[[str], None]) -> None:
        self._gone.append(listener)

    def lose(self, reason: str) -> None:
        """The connection is lost for good: `gone` says why and the on_gone listeners run."""
        self.gone = reason
        for listener in self._gone:
            listener(reason)

    def max_iot_payload(self) -> int:
        return self.iot_payload_limit

    def known_max_iot_payload(self) -> int:
        return self.iot_payload_limit

    def publish_iot(self, topic: str, payload: bytes | str, qos: int = 1) -> None:
        if self.fail_publishes:
            self.fail_publishes -= 1
            raise self.publish_error
        self._record("publish_iot", topic, payload, qos)
        reply = self.iot_responder(topic, payload) if self.iot_responder else None
        if reply:
            self.deliver("iot", reply[0], reply[1])

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> FakeSubscription:
        return self._subscribe("iot", topic_filter, handler)

    def publish_local(self, topic: str, message: Any) -> None:
        self._record("publish_local", topic, message)

    def subscribe_local(self, topic: str, handler: LocalHandler) -> FakeSubscription:
        return self._subscribe("local", topic, handler)

    def get_config(self, key_path: Optional[list] = None, component: Optional[str] = None) -> Any:
        self._record("get_config", key_path, component)
        node: Any = self.config
        for key in key_path or []:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    def subscribe_config(self, handler: ConfigHandler, component: Optional[str] = None) -> FakeSubscription:
        return self._subscribe("config", component or "", handler)

    # -- SupervisorPort (process A) --------------------------------------------------------------------
    def update_config(self, key_path: list, value_to_merge: dict) -> None:
        self._record("update_config", key_path, value_to_merge)

    def update_state(self, state: str) -> None:
        self._record("update_state", state)

    def restart_component(self, component: str) -> str:
        self._record("restart_component", component)
        return self.restart_status

    def component_details(self, component: str) -> dict:
        self._record("component_details", component)
        return {"componentName": component, "version": "1.0.0", "state": "RUNNING", "configuration": {}}

    def attach_collector(self, channel: CollectorChannel) -> None:
        self._collector = channel

    def detach_collector(self, channel: CollectorChannel) -> None:
        if self._collector is channel:
            self._collector = None

    def collect_now(self, request_id: str, timeout: float) -> dict:
        self._record("collect_now", request_id, timeout)
        if self._collector is None:  # at once: Ipc's wait for a collector to attach is tested on Ipc itself
            raise IpcUnavailable("no collector process running")
        return self._collector.collect_now(request_id, timeout)

    # -- CollectorPort (process B) ---------------------------------------------------------------------
    def health(self, path: str, value: Optional[dict]) -> None:
        self._record("health", path, value)

    def mitigate(self, request: dict) -> dict:
        self._record("mitigate", request)
        if self.refuse_mitigation:
            from ggdefender.relay_wire import MitigationRefused

            raise MitigationRefused(self.refuse_mitigation)
        return {"requestId": request["requestId"], "status": "accepted"}

    def subscribe_mitigation(self, handler: MitigationHandler) -> FakeSubscription:
        return self._subscribe("mitigation", "", handler)

    def subscribe_collect_now(self, handler: CollectNowHandler) -> FakeSubscription:
        return self._subscribe("collect", "", handler)

    def collect_result(self, answer: dict) -> None:
        self._record("collect_result", answer)


if TYPE_CHECKING:  # checked by mypy (tests/unit/test_typecheck.py): the fake is both processes' port
    from ggdefender.ipc_port import CollectorPort, SupervisorPort

    _a: SupervisorPort = FakeIpc()
    _b: CollectorPort = FakeIpc()

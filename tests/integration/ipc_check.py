"""One set of IPC checks for `ggdefender.ipc.Ipc`, run with each IPC client (awsiotsdk, pure) against each core
(`ggdefender local`, nucleus lite): every operation the component uses, through the real protocol, recorded as
outcomes the tests compare with what each core must answer and between the two clients (which must agree).

The caller's component needs the grants in `policy(thing)` and "Check": {"Value": "5"} in its configuration.
"""

from __future__ import annotations

import base64
import threading
import time
from typing import Any, Callable

from ggdefender.ipc import Ipc, PayloadTooLarge, error_text

CONFIG = {"Check": {"Value": "5"}}  # strings: lite keeps a recipe's YAML scalars as strings
MISSING = "ggdefender.NoSuchComponent"  # lifecycle calls name a component that is not there: nothing restarts
WAIT = 20.0  # bound on each wait for a delivery (a wait, not a timing assertion)


def topics(thing: str) -> dict:
    return {"local": f"ggdefender/ipc-check/{thing}/local", "iot": f"ggdefender/ipc-check/{thing}/iot",
            "denied_local": f"ggdefender/ipc-check/{thing}/denied", "denied_iot": f"ggdefender/ipc-check/{thing}/no"}


def policy(thing: str) -> dict:
    t = topics(thing)
    return {
        "aws.greengrass.ipc.pubsub": {"ipc-check:pubsub": {
            "operations": ["aws.greengrass#PublishToTopic", "aws.greengrass#SubscribeToTopic"],
            "resources": [t["local"]]}},
        "aws.greengrass.ipc.mqttproxy": {"ipc-check:mqttproxy": {
            "operations": ["aws.greengrass#PublishToIoTCore", "aws.greengrass#SubscribeToIoTCore"],
            "resources": [t["iot"]]}},
        "aws.greengrass.Cli": {"ipc-check:cli": {
            "operations": ["aws.greengrass#GetComponentDetails", "aws.greengrass#RestartComponent"],
            "resources": [MISSING]}},
    }


class _Inbox:
    def __init__(self) -> None:
        self.items: list = []
        self.changed = threading.Condition()

    def add(self, *item: Any) -> None:
        with self.changed:
            self.items.append(item)
            self.changed.notify_all()

    def wait(self, count: int) -> list:
        deadline = time.monotonic() + WAIT
        with self.changed:
            while len(self.items) < count and time.monotonic() < deadline:
                self.changed.wait(0.2)
            return list(self.items)


def _outcome(call: Callable[[], Any]) -> str:
    try:
        value = call()
    except PayloadTooLarge:
        return "PayloadTooLarge"
    except Exception as exc:  # the outcome is the error, as the caller sees it
        return error_text(exc)
    return "ok" if value is None else f"ok {value!r}"


def run(ipc: Ipc, component: str, thing: str) -> dict:
    """The outcome of each check, by name."""
    t = topics(thing)
    out: dict = {"client": ipc.client_name}
    out["get-own"] = _outcome(lambda: ipc.get_config(["Check", "Value"], component=component))  # a leaf: {K: v}
    out["get-missing"] = _outcome(lambda: ipc.get_config(["NoSuchKey"], component=component))
    limit = ipc.max_iot_payload()
    out["max-iot-payload"] = limit

    # configuration: a change of our own configuration comes back on the subscription
    changes = _Inbox()
    config_sub = ipc.subscribe_config(lambda path: changes.add(tuple(path)))
    # the value names the client: a second run as the same component changes it again (an update that changes
    # nothing notifies nobody)
    out["update-config"] = _outcome(lambda: ipc.update_config(["Check"], {"Changed": ipc.client_name}))
    got = changes.wait(1)
    out["config-event"] = sorted({path for (path,) in got})[:1]
    out["get-changed"] = _outcome(lambda: ipc.get_config(["Check", "Changed"], component=component))
    config_sub.close()

    # local pub/sub: JSON and binary messages, back on our own subscription, in order
    local = _Inbox()
    local_sub = ipc.subscribe_local(t["local"], lambda topic, payload: local.add(topic, payload))
    out["publish-local-json"] = _outcome(lambda: ipc.publish_local(t["local"], {"n": 1, "s": "é"}))
    out["publish-local-binary"] = _outcome(lambda: ipc.publish_local(t["local"], b"\x00\xffbin"))
    out["local-received"] = [[topic, base64.b64encode(p).decode() if isinstance(p, bytes) else p]
                             for topic, p in local.wait(2)]
    local_sub.close()
    out["publish-local-after-close"] = _outcome(lambda: ipc.publish_local(t["local"], {"n": 2}))
    time.sleep(0.5)  # a delivery after close() would land in the inbox by now
    out["local-after-close"] = len(local.items)

    # IoT Core: a binary payload out and back through the core's MQTT side
    iot = _Inbox()
    iot_sub = ipc.subscribe_iot(t["iot"], lambda topic, payload: iot.add(topic, payload))
    payload = bytes(range(256)) * 4
    out["publish-iot"] = _outcome(lambda: ipc.publish_iot(t["iot"], payload))
    out["iot-received"] = [[topic, p == payload, len(p)] for topic, p in iot.wait(1)]
    iot_sub.close()
    out["publish-iot-over-limit"] = _outcome(lambda: ipc.publish_iot(t["iot"], b"x" * (limit + 1)))

    # refusals: modeled errors, as the same exception and text with either client
    out["publish-local-denied"] = _outcome(lambda: ipc.publish_local(t["denied_local"], {"x": 1}))
    out["subscribe-local-denied"] = _outcome(lambda: ipc.subscribe_local(t["denied_local"], lambda *a: None).close())
    out["publish-iot-denied"] = _outcome(lambda: ipc.publish_iot(t["denied_iot"], b"{}"))
    out["subscribe-iot-denied"] = _outcome(lambda: ipc.subscribe_iot(t["denied_iot"], lambda *a: None).close())

    # lifecycle
    out["update-state"] = _outcome(lambda: ipc.update_state("RUNNING"))
    out["details-missing"] = _outcome(lambda: ipc.component_details(MISSING))
    out["restart-missing"] = _outcome(lambda: ipc.restart_component(MISSING))
    out["still-connected"] = _outcome(lambda: ipc.get_config(["Check", "Value"], component=component))
    return out


def same(a: dict, b: dict) -> bool:
    """Whether two clients' outcomes agree (their own names aside), else an AssertionError listing the checks
    that differ."""
    def plain(out: dict) -> dict:
        name = out["client"]
        return {k: str(v).replace(f".{name}", "").replace(f"'{name}'", "'CLIENT'") for k, v in out.items()
                if k != "client"}

    pa, pb = plain(a), plain(b)
    differ = {k: (pa.get(k), pb.get(k)) for k in sorted(set(pa) | set(pb)) if pa.get(k) != pb.get(k)}
    assert not differ, f"{a['client']} and {b['client']} disagree: {differ}"
    return True

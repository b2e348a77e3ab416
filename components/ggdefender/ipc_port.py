"""The IPC port: exactly what the parts call on their IPC handle, declared once.

Process A's handle is `ggdefender.ipc.Ipc` (awsiotsdk, the one Greengrass IPC connection); process B's is
`ggdefender.collector.relay_client.RelayClient` (the private socketpair relay served by A). Both satisfy `IpcPort`; each
also has what only its process may do (`SupervisorPort`, `CollectorPort`). mypy checks the implementations
against these (tests/unit/test_typecheck.py), and the tests' one fake (tests/fake_ipc.py) implements them too,
so a method added here is added everywhere or the type check fails.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Protocol

IotHandler = Callable[[str, bytes], None]
LocalHandler = Callable[[str, Any], None]  # payload: dict for JSON messages, bytes for binary ones
ConfigHandler = Callable[[list], None]  # key path of the changed node, relative to `configuration`
MitigationHandler = Callable[[dict], None]  # {"requestId", "operation", "status", "statusDetails", "violationId"}
CollectNowHandler = Callable[[str], None]  # the requestId of one collect-now call from process A


class Subscription(Protocol):
    """A live subscription; `close()` ends it (idempotent)."""

    def close(self) -> None: ...


class CollectorChannel(Protocol):
    """Process A's private line to the running collector process (supervisor.relay_server.RelayServer)."""

    def collect_now(self, request_id: str, timeout: float) -> dict: ...


class IpcPort(Protocol):
    """What every part (collector, plugins, detect, remediation, health, supervisor) calls, in A and in B."""

    @property
    def thing_name(self) -> str: ...

    def close(self) -> None: ...

    def on_gone(self, listener: Callable[[str], None]) -> None:
        """listener(reason) once when the connection is lost for good."""

    def max_iot_payload(self) -> int:
        """The largest IoT Core payload the nucleus takes over IPC."""

    def publish_iot(self, topic: str, payload: bytes | str, qos: int = 1) -> None: ...

    def subscribe_iot(self, topic_filter: str, handler: IotHandler, qos: int = 1) -> Subscription: ...

    def publish_local(self, topic: str, message: Any) -> None: ...

    def subscribe_local(self, topic: str, handler: LocalHandler) -> Subscription: ...

    def get_config(self, key_path: Optional[list] = None, component: Optional[str] = None) -> Any:
        """The own configuration (code defaults merged under it), or the node at key_path; None if absent."""

    def subscribe_config(self, handler: ConfigHandler, component: Optional[str] = None) -> Subscription: ...


class SupervisorPort(IpcPort, Protocol):
    """Process A only (`Ipc`): what B is never allowed (supervisor.relay_server.PRIVILEGED_OPS), plus the typed
    call to B."""

    gone: Optional[str]  # why the connection was given up for good (None while it may come back)
    retry_budget: float  # seconds an outage may last before it is `gone` (Supervisor.IpcRetryBudgetSeconds)

    def known_max_iot_payload(self) -> int:
        """max_iot_payload() without asking the nucleus (health publishes must not wait on it)."""

    def update_config(self, key_path: list, value_to_merge: dict) -> None: ...

    def update_state(self, state: str) -> None: ...

    def restart_component(self, component: str) -> str: ...

    def component_details(self, component: str) -> dict: ...

    def attach_collector(self, channel: CollectorChannel) -> None:
        """The relay of the collector process that answers collect_now (set by supervisor.relay_server.RelayServer)."""

    def detach_collector(self, channel: CollectorChannel) -> None: ...

    def collect_now(self, request_id: str, timeout: float) -> dict:
        """Ask process B's collector for a report now over the private relay; its answer
        {"event": "report-published", "requestId", "reportId", "topic"} or {"event": "report-failed", "reason"}.
        Raises IpcUnavailable when no collector process attaches within `timeout` or it goes away meanwhile,
        TimeoutError when it does not answer in time."""


class CollectorPort(IpcPort, Protocol):
    """Process B only (`RelayClient`): the typed calls to process A over the private relay."""

    def health(self, path: str, value: Optional[dict]) -> None: ...

    def mitigate(self, request: dict) -> dict: ...

    def subscribe_mitigation(self, handler: MitigationHandler) -> Subscription: ...

    def subscribe_collect_now(self, handler: CollectNowHandler) -> Subscription:
        """handler(requestId) for each collect-now call of process A; answer with `collect_result`."""

    def collect_result(self, answer: dict) -> None:
        """Answer a collect-now call: {"event": "report-published"|"report-failed", "requestId", ...}."""

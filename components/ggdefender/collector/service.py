"""The collector loop of process B: tick -> sample -> custom metrics -> build -> validate -> publish.

Never stalls: every tick is wrapped, a failed collection or publish is logged and the next tick tries
again, ticks are fixed-rate (no drift) and a configuration change never publishes early. Only an IPC
that stays unreachable after the retry budget ends the loop (the supervisor then restarts process B).
Also answers `collect-now` commands and hands each report to its observers (on-device detect, a peer part
that the process's host wires in: collector/process.py; docs/architecture.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import random
import threading
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, List, Optional, Sequence

from ggdefender import health, ratelog, topics
from ggdefender.collector import config as cfg
from ggdefender.collector.pipeline import Built, Pipeline
from ggdefender.collector.report import MQTT_LIMIT
from ggdefender.collector.report import topic as report_topic
from ggdefender.collector.report_id import ReportIds
from ggdefender.ipc import IpcUnavailable

if TYPE_CHECKING:
    from ggdefender.ipc_port import CollectorPort, Subscription
    from ggdefender.plugins.host import PluginHost

log = logging.getLogger("ggdefender.collector")

COMMANDS_TOPIC = topics.COLLECTOR_COMMANDS
EVENTS_TOPIC = topics.COLLECTOR_EVENTS
CUSTOM_METRICS_TOPIC = topics.CUSTOM_METRICS
MAX_PENDING_COMMANDS = 16
MAX_REQUEST_ID = 128
# health's lastReport changes on every report; republishing the document for each one would double IoT Core
# traffic, so an unchanged status is refreshed at most this often (a change is reported at once)
LAST_REPORT_REFRESH_SECONDS = 900.0


PUBLISH_KEY = "publish"
EXPORT_KEY = "export"  # mode "also": the export's failures are said apart from the report's


class PublishFailed(RuntimeError):
    """The report was built but the nucleus did not take it (the text says why); the next tick tries again."""


class CollectorService:
    """The `Collector` part (part.Part): its section, the subscriptions it holds and the report loop."""

    section = "Collector"

    def __init__(self, ipc: CollectorPort, thing: str, state_dir: str, *, source: Any = None,
                 plugins: Optional[PluginHost] = None, observers: Iterable[Any] = (),
                 clock: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        if not thing:
            raise ValueError("no thing name (AWS_IOT_THING_NAME is not set)")
        self.ipc = ipc
        self.thing = thing
        self.state_dir = state_dir
        self._clock = clock
        self._mono = monotonic
        self._settings = cfg.CollectorSettings()
        # no per-report jsonschema validation in the running component: memory and time (Pipeline.__init__)
        self.pipeline = Pipeline(self._settings, ReportIds.in_state_dir(state_dir), source=source, validate=False)
        # peers in process B, wired by its host: the plugin host gives custom metrics and takes external samples;
        # each observer (detect) sees every built report, published or not
        self.plugins = plugins
        self.observers = list(observers)
        self._wake = threading.Event()
        self._config_dirty = threading.Event()
        self._commands: "queue.Queue[dict]" = queue.Queue(MAX_PENDING_COMMANDS)
        self._last_tick = float("-inf")  # monotonic time of the last report attempt
        self._subs: List[Subscription] = []
        self.published = 0  # reports handed to IPC, for health and tests
        self._last_report = ("", float("-inf"))  # (status, monotonic time) last put into health
        self.failures = 0
        self.exported = 0  # mode "also": copies the export rule took
        self.export_failures = 0
        # a nucleus that cannot reach IoT Core refuses every report until it can (nucleus lite has no queue):
        # said once with the reason, then summarised now and then, and once more when reports go out again
        self._publish_log = ratelog.RateLimitedLog(log, level=logging.ERROR)
        self._capped_from: Optional[int] = None  # the MaxReportBytes last cut to the nucleus's limit (said once per value)

    # -- configuration -----------------------------------------------------------------------------
    @property
    def settings(self) -> cfg.CollectorSettings:
        return self._settings

    def reconfigure(self, section: Any) -> None:
        """Validate and apply the `Collector` section; ConfigError (nothing changed) when it is invalid."""
        new = cfg.parse(section)  # ConfigError: nothing changed
        for w in new.warnings:
            log.warning("%s", w)
        limit = self._max_iot_payload()
        if new.max_report_bytes > limit:
            # nucleus lite drops the IPC connection over a larger message (ipc.LITE_MAX_IOT_PAYLOAD): reports are
            # cut to what the nucleus takes, as they are to MaxReportBytes
            if new.max_report_bytes != self._capped_from:
                log.info("reports are kept at or under %d bytes, what this nucleus takes over IPC "
                         "(Collector.MaxReportBytes is %d)", limit, new.max_report_bytes)
                self._capped_from = new.max_report_bytes
            new = dataclasses.replace(new, max_report_bytes=limit)
        if new != self._settings:
            log.info("Collector configuration: interval %gs, format %s, metrics %s",
                     new.interval, new.report_format, ",".join(new.metrics) or "none")
        self._settings = new
        self.pipeline.reconfigure(new)

    # -- IPC wiring --------------------------------------------------------------------------------
    def start(self) -> None:
        self._subscribe()

    def _subscribe(self) -> None:
        for fmt in topics.REPORT_FORMATS:
            for outcome in topics.REPORT_OUTCOMES:
                t = f"{report_topic(self.thing, fmt)}/{outcome}"
                self._subs.append(self.ipc.subscribe_iot(t, self._on_reply))
        self._subs.append(self.ipc.subscribe_local(COMMANDS_TOPIC, self._on_command))  # other components' door
        serve = getattr(self.ipc, "subscribe_collect_now", None)
        if serve is not None:  # process B: A's remediation asks over the private relay (ipc_port.CollectorPort)
            self._subs.append(serve(self._on_private_collect))
        self._subs.append(self.ipc.subscribe_local(CUSTOM_METRICS_TOPIC, self._on_custom_sample))
        self._subs.append(self.ipc.subscribe_config(lambda path: self._mark_config_dirty()))

    def _mark_config_dirty(self) -> None:
        self._config_dirty.set()
        self._wake.set()

    def _on_reply(self, topic: str, payload: bytes) -> None:
        fmt = "cbor" if "/metrics/cbor/" in topic else "json"
        try:
            if fmt == "json":
                msg = json.loads(payload)
            else:
                import cbor2

                msg = cbor2.loads(payload)
        except Exception as exc:
            log.warning("unreadable reply on %s: %s", topic, exc)
            return
        if not isinstance(msg, dict):
            log.warning("unexpected reply on %s: %r", topic, msg)
            return
        rid = msg.get("reportId")
        if topic.endswith("/accepted"):
            log.info("report %s accepted", rid)
            self._report_health("ACCEPTED", rid)
        else:
            raw = msg.get("statusDetails")
            details = raw if isinstance(raw, dict) else {}
            log.warning("report %s REJECTED: %s: %s", rid if rid is not None else "(id unknown)",
                        details.get("ErrorCode", "?"), details.get("ErrorMessage", "?"))
            self._report_health("REJECTED", rid, f"{details.get('ErrorCode', '?')}: {details.get('ErrorMessage', '?')}")

    def _max_iot_payload(self) -> int:
        limit = getattr(self.ipc, "max_iot_payload", None)
        try:
            return int(limit()) if callable(limit) else MQTT_LIMIT - 1
        except IpcUnavailable:
            raise
        except Exception as exc:
            log.debug("the nucleus's IoT Core message limit is not known: %s", exc)
            return MQTT_LIMIT - 1

    def _report_health(self, status: str, report_id: Any, reason: str = "") -> None:
        """lastReport in the health document: at once on a change of status, else now and then."""
        last_status, last_at = self._last_report
        now = self._mono()
        if status == last_status and now - last_at < LAST_REPORT_REFRESH_SECONDS:
            return
        self._last_report = (status, now)
        value: dict = {"status": status, "at": health.now_iso()}
        if isinstance(report_id, int) and not isinstance(report_id, bool):
            value["reportId"] = report_id
        if reason:
            value["reason"] = str(reason)[:500]
        health.report(self.ipc, "lastReport", value)

    def _on_command(self, topic: str, message: Any) -> None:
        if not isinstance(message, dict) or message.get("command") != "collect-now":
            log.warning("ignored message on %s: expected {\"command\": \"collect-now\", \"requestId\": ...}",
                        topic)
            return
        request_id = message.get("requestId")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
            log.warning("collect-now without a valid requestId (string, 1-%d characters)", MAX_REQUEST_ID)
            return
        self._queue_collect({"requestId": request_id})

    def _on_private_collect(self, request_id: str) -> None:
        self._queue_collect({"requestId": request_id, "private": True})

    def _queue_collect(self, request: dict) -> None:
        try:
            self._commands.put_nowait(request)
        except queue.Full:
            self._answer(request, {"event": "report-failed", "reason": "too many collect-now requests pending"})
            return
        self._wake.set()

    def _on_custom_sample(self, topic: str, payload: Any) -> None:
        if self.plugins is not None:
            self.plugins.on_external_sample(topic, payload)

    def _answer(self, request: dict, event: dict) -> None:
        """Answer one collect-now request where it came from: A's private call, or the public events topic."""
        event = {"event": event["event"], "requestId": request["requestId"], **event}
        try:
            if request.get("private"):
                self.ipc.collect_result(event)
            else:
                self.ipc.publish_local(EVENTS_TOPIC, event)
        except Exception as exc:
            log.warning("could not answer collect-now %s (%s): %s", request["requestId"], event["event"], exc)

    # -- one report ----------------------------------------------------------------------------------
    def collect_and_publish(self) -> Built:
        """Build, validate, publish one report; raises on failure (the caller logs and goes on)."""
        custom = None
        if self.plugins is not None and self._settings.include_custom_metrics:
            try:
                custom = self.plugins.collect()
            except Exception as exc:
                log.warning("custom metrics left out of this report: %s", exc)
        built = self.pipeline.build(custom)
        at = self._clock()
        exp = self._settings.export
        try:
            if exp.mode == "only":  # the rule is the report's only destination: its failure is the report's
                self._publish(self._topic(built.fmt), built, "reports reach the export rule again")
                self._report_health("EXPORTED", built.report_id)  # no reply comes on a rule topic
            else:
                self._publish(report_topic(self.thing, built.fmt), built, "reports reach IoT Core again")
                export_topic = exp.topic(self.thing, built.fmt)
                if export_topic is not None:
                    self._export(export_topic, built)
        finally:
            for observer in self.observers:
                try:
                    observer.observe(built.report, at)
                except Exception:
                    log.exception("%s failed on report %d", getattr(observer, "section", "an observer"),
                                  built.report_id)
        return built

    def _topic(self, fmt: str) -> str:
        """Where a report goes first: the export rule in mode "only", else Device Defender's topic."""
        exported = self._settings.export.topic(self.thing, fmt)
        return exported if self._settings.export.mode == "only" and exported else report_topic(self.thing, fmt)

    def _publish(self, t: str, built: Built, recovered: str) -> None:
        """The report's own publish: a failure fails the report (the next one's network_stats carry its traffic)."""
        try:
            self.ipc.publish_iot(t, built.payload, qos=self._settings.publish_qos)
        except BaseException as exc:
            self.pipeline.not_delivered()
            self._report_health("PUBLISH_FAILED", built.report_id, f"{type(exc).__name__}: {exc}")
            if isinstance(exc, Exception) and not isinstance(exc, IpcUnavailable):
                raise PublishFailed(str(exc)) from exc
            raise
        self.published += 1
        self._publish_log.recovered(PUBLISH_KEY, recovered)
        log.info("published report %d (%d bytes) to %s", built.report_id, len(built.payload), t)

    def _export(self, t: str, built: Built) -> None:
        """Mode "also": the copy to the export rule after Device Defender took the report. Its failure is said once
        while it lasts (and counted in `export_failures`) but never fails the report Device Defender has."""
        try:
            self.ipc.publish_iot(t, built.payload, qos=self._settings.publish_qos)
        except IpcUnavailable:
            raise
        except Exception as exc:
            self.export_failures += 1
            self._publish_log.failed(EXPORT_KEY, "reports not exported to %s (Device Defender still gets them; "
                                     "each report tries again): %s", t, exc)
            return
        self.exported += 1
        self._publish_log.recovered(EXPORT_KEY, "reports reach the export rule again")
        log.debug("exported report %d to %s", built.report_id, t)

    def _tick(self, requests: Sequence[dict] = ()) -> None:
        self._last_tick = self._mono()
        try:
            built = self.collect_and_publish()
        except IpcUnavailable:
            raise
        except Exception as exc:
            self.failures += 1
            if isinstance(exc, PublishFailed):
                self._publish_log.failed(PUBLISH_KEY, "reports not published (each tick tries again; status "
                                         "PUBLISH_FAILED in health): %s", exc)
            else:
                log.error("report not published (will try again next tick): %s", exc,
                          exc_info=not isinstance(exc, (ValueError, OSError)))
            for request in requests:
                self._answer(request, {"event": "report-failed", "reason": str(exc)[:500]})
            return
        for request in requests:
            self._answer(request, {"event": "report-published", "reportId": built.report_id,
                                   "topic": self._topic(built.fmt)})

    # -- the loop ------------------------------------------------------------------------------------
    def run(self, stop: threading.Event, reload: Callable[[], None]) -> None:
        """The report loop until `stop`; configured and started by the process's host, which `reload()` asks
        to read and dispatch the configuration again after a change (and which closes every part after)."""
        st = self._settings
        jitter = random.uniform(0, st.interval * st.start_jitter_percent / 100.0)
        next_at = self._mono() + jitter
        interval = st.interval
        log.info("collector started for thing %s: first report in %.1fs, then every %gs",
                 self.thing, jitter, interval)
        while not stop.is_set():
            now = self._mono()
            wait = next_at - now
            if not self._commands.empty():
                # collect-now requests wait for MinCollectNowSeconds since the last report (and are
                # answered together), so no component can flood IoT Core with reports
                wait = min(wait, self._last_tick + self._settings.min_collect_now_seconds - now)
            if wait > 0 and not self._config_dirty.is_set():
                self._wake.wait(min(wait, 60.0))
                self._wake.clear()
            if stop.is_set():
                break
            if self._config_dirty.is_set():
                self._config_dirty.clear()
                try:
                    reload()
                except IpcUnavailable:
                    raise
                except Exception as exc:
                    log.error("could not read the configuration: %s", exc)
                if self._settings.interval != interval:
                    # keep the fixed rate; a shorter interval takes effect from the last tick
                    next_at = next_at - interval + self._settings.interval
                    interval = self._settings.interval
            if self._mono() >= self._last_tick + self._settings.min_collect_now_seconds:
                pending = self._drain_commands()
                if pending:
                    self._tick(pending)
                    continue
            if self._mono() >= next_at:
                if self._settings.enabled:
                    self._tick(self._drain_commands())  # also answers requests still waiting
                now = self._mono()
                while next_at <= now:
                    next_at += interval  # skip missed ticks instead of bursting

    def wake(self) -> None:
        """Make run() look at its stop event now (signal handlers call this)."""
        self._wake.set()

    def _drain_commands(self) -> list:
        requests = []
        while True:
            try:
                requests.append(self._commands.get_nowait())
            except queue.Empty:
                return requests

    def close(self) -> None:
        for sub in self._subs:
            try:
                sub.close()
            except Exception:
                pass
        self._subs = []

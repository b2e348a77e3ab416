"""Simulated fleet reports for the fleet tier (`ggdefender fleet simulate`, docs/fleet.md).

Every device's series is derived from real reports of our collector (collected on this machine, or read from a
file such as a `ggdefender local` rule's messages.jsonl): the devices run the template's image (its listening
ports and interfaces), keep a few of its connections, and send traffic at the template's rate, each device with
its own seeded factor, a daily (diurnal) cycle and per-report jitter. Report ids are the epoch milliseconds of
each report, so they increase per device. Anomalies are injected on chosen devices and times and written as
ground truth for the benchmark. Output lines are what the topic rule of docs/fleet.md delivers: the report's
fields plus `thingName` and `receivedAt` (epoch ms); for CBOR, `{"report": base64, "thingName", "receivedAt"}`.

Memory stays bounded at any fleet size: devices are visited in a seeded permutation (no per-device table) and
all randomness comes from a counter-based hash of (seed, device, report, purpose).
"""

from __future__ import annotations

import base64
import heapq
import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ggdefender.collector import report as rpt

from .json_input import read_json_values

MAX_DEVICES = 10_000_000
MAX_SECONDS = 30 * 86400  # a month of reports; the ML baselines need 14 days
MAX_TOTAL_REPORTS = 2_000_000_000
MIN_INTERVAL, MAX_INTERVAL = 1, 86400
MAX_TEMPLATE_BYTES = 64 * 1024 * 1024
MAX_TEMPLATES = 10_000
MAX_ANOMALIES = 100_000
MAX_LATE_PENDING = 1_000_000  # late reports held back at once (they are in memory until their time comes)
MAX_LATE_SECONDS = 86400
VALIDATE_ALL_UP_TO = 20_000  # above this many reports the schema check runs on a sample (it costs ~0.2 ms each)
VALIDATE_SAMPLE = 20_000
THING_PREFIX = "thing-"

# traffic of a template without network_stats (or with none moving): an idle device talking MQTT
DEFAULT_RATE_OUT, DEFAULT_RATE_IN, DEFAULT_PACKET = 120.0, 200.0, 400.0
# remote endpoints of a template without connections (documentation addresses, RFC 5737)
DEFAULT_REMOTES = ("192.0.2.10:8883", "192.0.2.11:443", "192.0.2.12:8883")
ANOMALY_REMOTE_NET = "198.51.100."  # where an injected connections=+N anomaly connects

# what each anomaly kind shows up as in Device Defender's metrics (what the benchmark scores against)
ANOMALY_METRICS = {
    "listening-port": ["aws:listening-tcp-ports", "aws:num-listening-tcp-ports"],
    "udp-port": ["aws:listening-udp-ports", "aws:num-listening-udp-ports"],
    "connections": ["aws:num-established-tcp-connections", "aws:destination-ip-addresses"],
    "bytes-out": ["aws:all-bytes-out"], "bytes-in": ["aws:all-bytes-in"],
    "packets-out": ["aws:all-packets-out"], "packets-in": ["aws:all-packets-in"],
    "stop": [],
}
_NET_KEY = {"bytes-out": "bytes_out", "bytes-in": "bytes_in", "packets-out": "packets_out", "packets-in": "packets_in"}


class SimulationError(ValueError):
    """Bad simulation input; the message names the problem."""


# -- counter-based randomness (no per-device state) ---------------------------------------------------------
_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _u(seed: int, *parts: int) -> float:
    """A uniform number in [0, 1) fixed by the seed and the parts (splitmix64 chained)."""
    x = _mix(seed & _M64)
    for p in parts:
        x = _mix(x ^ (p & _M64))
    return (x >> 11) / float(1 << 53)


# -- the template: what real reports tell about a device --------------------------------------------------
@dataclass(frozen=True)
class Template:
    tcp: Tuple[Tuple[int, Optional[str]], ...]
    udp: Tuple[Tuple[int, Optional[str]], ...]
    connections: Tuple[dict, ...]
    rate_out: float  # bytes/s
    rate_in: float
    packet_out: float  # bytes per packet
    packet_in: float
    custom_metrics: Dict[str, list] = field(default_factory=dict)
    reports: int = 1


def _ports(metrics: dict, key: str) -> Tuple[Tuple[int, Optional[str]], ...]:
    return tuple((int(p["port"]), p.get("interface")) for p in (metrics.get(key) or {}).get("ports") or ())


def template_from_reports(reports: Sequence[dict]) -> Template:
    """The device image and traffic of real reports (long names). Ports and connections come from the report
    with the most of them; rates are medians over the reports that carry network_stats."""
    if not reports:
        raise SimulationError("no reports to derive the fleet from")
    if len(reports) > MAX_TEMPLATES:
        raise SimulationError(f"{len(reports)} template reports; at most {MAX_TEMPLATES}")
    from ggdefender.collector.schema import validate_report

    for n, r in enumerate(reports, 1):
        problems = validate_report(r)
        if problems:
            raise SimulationError(f"template report {n} is not a valid Device Defender report: {problems[0]}")
    richest = max(reports, key=lambda r: len(_ports(r.get("metrics") or {}, "listening_tcp_ports"))
                  + len(_ports(r.get("metrics") or {}, "listening_udp_ports")))
    m = richest.get("metrics") or {}
    conns_src = max(reports, key=lambda r: len(((r.get("metrics") or {}).get("tcp_connections") or {})
                                               .get("established_connections", {}).get("connections") or ()))
    conns = tuple(dict(c) for c in ((conns_src.get("metrics") or {}).get("tcp_connections") or {})
                  .get("established_connections", {}).get("connections") or ())
    ids = sorted(int(r["header"]["report_id"]) for r in reports)
    gaps = [b - a for a, b in zip(ids, ids[1:]) if b > a]
    # the interval a report's network_stats span: the reports' own spacing, else the production 300 s
    span = (sorted(gaps)[len(gaps) // 2] / 1000.0) if gaps else 300.0
    rates: Dict[str, List[float]] = {k: [] for k in ("bytes_out", "bytes_in", "packets_out", "packets_in")}
    for r in reports:
        ns = (r.get("metrics") or {}).get("network_stats")
        if ns:
            for k in rates:
                rates[k].append(float(ns.get(k, 0)) / span)

    def median(xs: List[float]) -> float:
        return sorted(xs)[len(xs) // 2] if xs else 0.0

    out, inn = median(rates["bytes_out"]), median(rates["bytes_in"])
    pout, pin = median(rates["packets_out"]), median(rates["packets_in"])
    custom = dict(reports[-1].get("custom_metrics") or {})
    return Template(
        tcp=_ports(m, "listening_tcp_ports"), udp=_ports(m, "listening_udp_ports"), connections=conns,
        rate_out=out if out > 0 else DEFAULT_RATE_OUT, rate_in=inn if inn > 0 else DEFAULT_RATE_IN,
        packet_out=(out / pout) if out > 0 and pout > 0 else DEFAULT_PACKET,
        packet_in=(inn / pin) if inn > 0 and pin > 0 else DEFAULT_PACKET,
        custom_metrics=custom, reports=len(reports))


def collect_reports(window: float = 1.0) -> List[dict]:
    """Two real reports of this machine, `window` seconds apart (the second carries network_stats), built by
    the collector's own pipeline with its default settings and full schema validation."""
    from ggdefender.collector import config as cfg
    from ggdefender.collector.pipeline import Pipeline
    from ggdefender.collector.report_id import ReportIds

    pipeline = Pipeline(cfg.parse(None), ReportIds(), validate=True)
    first = pipeline.build().report
    time.sleep(window)
    return [first, pipeline.build().report]


def _report_of_line(obj: Any, n: int) -> dict:
    """A report from one input line: a bare report, a `ggdefender local` rule message
    ({"receivedAt", "topic", "payloadBase64", "json"?}) or a fleet record (report fields + thingName)."""
    if not isinstance(obj, dict):
        raise SimulationError(f"--from line {n}: expected a JSON object, got {type(obj).__name__}")
    if isinstance(obj.get("json"), dict):
        return rpt.to_long(obj["json"])
    if "payloadBase64" in obj:
        fmt = "cbor" if str(obj.get("topic", "")).endswith("/cbor") else "json"
        try:
            return rpt.decode(base64.b64decode(obj["payloadBase64"]), fmt)
        except Exception as exc:  # base64, JSON and CBOR errors alike: the line is not a report
            raise SimulationError(f"--from line {n}: payloadBase64 is not a {fmt} report ({exc})") from None
    if "report" in obj and isinstance(obj["report"], str):
        return rpt.decode(base64.b64decode(obj["report"]), "cbor")
    report = rpt.to_long({k: v for k, v in obj.items() if k not in ("thingName", "receivedAt")})
    if "header" not in report:
        raise SimulationError(f"--from line {n}: not a report (no header)")
    return report


def read_reports(path: str) -> List[dict]:
    """Reports from a file: one JSON report, or JSON lines of reports / rule messages / fleet records."""
    try:
        lines = read_json_values(path, MAX_TEMPLATE_BYTES)
    except OSError as exc:
        raise SimulationError(f"--from {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise SimulationError(f"--from {path}: {exc}") from None
    if len(lines) > MAX_TEMPLATES:
        lines = lines[-MAX_TEMPLATES:]  # the latest reports describe the device best
    return [_report_of_line(obj, n) for n, obj in enumerate(lines, 1)]


# -- anomalies ----------------------------------------------------------------------------------------------
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([dhms])")
_UNIT = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str, what: str) -> float:
    """'2h', '90m', '1h30m', '45s', '1d' -> seconds."""
    pos, total = 0, 0.0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT[m.group(2)]
        pos = m.end()
    if not text or pos != len(text):
        raise SimulationError(f"{what} {text!r} is not a duration like 2h, 90m, 1h30m or 45s")
    return total


@dataclass(frozen=True)
class Anomaly:
    spec: str
    device: int
    kind: str
    start: float  # seconds after the simulation's start
    duration: Optional[float]  # None: until the end
    op: str = ""  # "x" multiply, "+" add, "=" set (ports)
    value: float = 0.0

    def active(self, offset: float) -> bool:
        return offset >= self.start and (self.duration is None or offset < self.start + self.duration)


_SPEC = re.compile(r"^(?P<thing>[^@]+)@(?P<at>[^+:]+)(?:\+(?P<dur>[^:]+))?:(?P<what>.+)$")


def parse_anomaly(spec: str, devices: int) -> Anomaly:
    """`thing-0042@2h:listening-port=8888`, `thing-7@90m+30m:bytes-out=x50`, `thing-3@1h:connections=+40`,
    `thing-9@3h:stop`. The thing is `thing-<index>` (zero padding optional), the time an offset from the start."""
    m = _SPEC.match(spec.strip())
    if not m:
        raise SimulationError(f"--anomaly {spec!r}: expected THING@TIME[+DURATION]:KIND[=VALUE], "
                              "e.g. thing-42@2h:listening-port=8888 or thing-7@90m+30m:bytes-out=x50")
    thing = m.group("thing")
    if not thing.startswith(THING_PREFIX) or not thing[len(THING_PREFIX):].isdigit():
        raise SimulationError(f"--anomaly {spec!r}: the thing must be {THING_PREFIX}<number>, got {thing!r}")
    device = int(thing[len(THING_PREFIX):])
    if device >= devices:
        raise SimulationError(f"--anomaly {spec!r}: {thing} is not in a fleet of {devices} devices "
                              f"({THING_PREFIX}0 .. {THING_PREFIX}{devices - 1})")
    start = parse_duration(m.group("at"), f"--anomaly {spec!r}: time")
    duration = parse_duration(m.group("dur"), f"--anomaly {spec!r}: duration") if m.group("dur") else None
    if duration is not None and duration <= 0:
        raise SimulationError(f"--anomaly {spec!r}: the duration must be > 0")
    kind, _, raw = m.group("what").partition("=")
    if kind not in ANOMALY_METRICS:
        raise SimulationError(f"--anomaly {spec!r}: unknown kind {kind!r} (one of {', '.join(ANOMALY_METRICS)})")
    if kind == "stop":
        if raw:
            raise SimulationError(f"--anomaly {spec!r}: stop takes no value")
        return Anomaly(spec, device, kind, start, duration)
    if not raw:
        raise SimulationError(f"--anomaly {spec!r}: {kind} needs a value, e.g. {kind}="
                              + ("8888" if kind.endswith("port") else "+40" if kind == "connections" else "x50"))
    if kind.endswith("port"):
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise SimulationError(f"--anomaly {spec!r}: the port must be 1..65535, got {raw!r}")
        return Anomaly(spec, device, kind, start, duration, "=", int(raw))
    op, num = raw[0], raw[1:]
    if kind == "connections" and op != "+":
        raise SimulationError(f"--anomaly {spec!r}: connections takes +N (extra connections), got {raw!r}")
    if op not in "x+":
        raise SimulationError(f"--anomaly {spec!r}: {kind} takes xFACTOR or +AMOUNT, got {raw!r}")
    try:
        value = float(num)
    except ValueError:
        raise SimulationError(f"--anomaly {spec!r}: {num!r} is not a number") from None
    limit = 10_000 if kind == "connections" else 1e9
    if not (0 < value <= limit) or (kind == "connections" and value != int(value)):
        raise SimulationError(f"--anomaly {spec!r}: the amount must be {'a whole number ' if kind == 'connections' else ''}"
                              f"> 0 and at most {limit:g}, got {num!r}")
    return Anomaly(spec, device, kind, start, duration, op, value)


# -- the fleet ----------------------------------------------------------------------------------------------
def _diurnal(epoch_s: float) -> float:
    """Traffic level over the day (UTC): 0.6 at 06:00, 1.4 at 18:00."""
    return 1.0 - 0.4 * math.cos(2 * math.pi * ((epoch_s % 86400) / 86400.0 - 0.25))


def _coprime_step(n: int, seed: int) -> int:
    step = 1 + int(_u(seed, 1) * max(1, n - 1))
    while math.gcd(step, n) != 1:
        step += 1
    return step % n or 1


@dataclass
class Fleet:
    devices: int
    reports_per_device: int
    interval: int  # seconds
    start_ms: int
    seed: int
    template: Template
    anomalies: List[Anomaly] = field(default_factory=list)
    fmt: str = "json"

    def __post_init__(self) -> None:
        if not 1 <= self.devices <= MAX_DEVICES:
            raise SimulationError(f"--devices must be 1..{MAX_DEVICES:,}, got {self.devices:,}")
        if not MIN_INTERVAL <= self.interval <= MAX_INTERVAL:
            raise SimulationError(f"--interval must be {MIN_INTERVAL}..{MAX_INTERVAL} seconds, got {self.interval}")
        if self.reports_per_device < 1:
            raise SimulationError(f"at least one report per device is needed, got {self.reports_per_device}")
        if self.reports_per_device * self.interval > MAX_SECONDS:
            raise SimulationError(f"{self.reports_per_device} reports every {self.interval} s span more than "
                                  f"{MAX_SECONDS // 86400} days")
        if self.devices * self.reports_per_device > MAX_TOTAL_REPORTS:
            raise SimulationError(f"{self.devices:,} devices x {self.reports_per_device:,} reports is more than "
                                  f"{MAX_TOTAL_REPORTS:,} reports")
        if len(self.anomalies) > MAX_ANOMALIES:
            raise SimulationError(f"{len(self.anomalies)} anomalies; at most {MAX_ANOMALIES}")
        if self.fmt not in ("json", "cbor"):
            raise SimulationError(f"--format must be json or cbor, got {self.fmt!r}")
        horizon = self.reports_per_device * self.interval
        for a in self.anomalies:
            if a.start >= horizon:
                raise SimulationError(f"--anomaly {a.spec!r}: starts after the last report "
                                      f"(the simulation spans {horizon} s)")
        self.by_device: Dict[int, List[Anomaly]] = {}
        for a in self.anomalies:
            self.by_device.setdefault(a.device, []).append(a)
        self._step = _coprime_step(self.devices, self.seed)
        self._shift = int(_u(self.seed, 2) * self.devices)
        self._width = len(str(self.devices - 1))
        self._iface = next((i for _, i in self.template.tcp if i), None)

    @property
    def total_reports(self) -> int:
        return self.devices * self.reports_per_device

    def thing_name(self, device: int) -> str:
        return f"{THING_PREFIX}{device:0{self._width}d}"

    def device_at(self, slot: int) -> int:
        """The device reporting in `slot` of each round (a seeded permutation: report order is not name order)."""
        return (slot * self._step + self._shift) % self.devices

    def time_ms(self, slot: int, k: int) -> int:
        """When the device in `slot` sends its k-th report: devices spread evenly over each interval."""
        iv = self.interval * 1000
        return self.start_ms + k * iv + (slot * iv) // self.devices

    def _connections(self, d: int) -> List[dict]:
        src = self.template.connections
        if src:
            n = 1 + int(_u(self.seed, d, 3) * min(len(src), 8))
            first = int(_u(self.seed, d, 4) * len(src))
            return [dict(src[(first + i) % len(src)]) for i in range(n)]
        n = 1 + int(_u(self.seed, d, 3) * len(DEFAULT_REMOTES))
        return [{"remote_addr": DEFAULT_REMOTES[i], "local_port": 32768 + int(_u(self.seed, d, 5, i) * 28000)}
                for i in range(n)]

    def report(self, d: int, k: int, t_ms: int, active: Sequence[Anomaly]) -> dict:
        """Device d's k-th report at t_ms (long names), with the active anomalies applied."""
        tpl = self.template
        tcp = [{"port": p, "interface": i} if i else {"port": p} for p, i in tpl.tcp]
        udp = [{"port": p, "interface": i} if i else {"port": p} for p, i in tpl.udp]
        conns = self._connections(d)
        if _u(self.seed, d, k, 6) < 0.2:  # a short-lived HTTPS connection now and then
            conns.append({"remote_addr": f"192.0.2.{20 + int(_u(self.seed, d, k, 7) * 200)}:443",
                          "local_port": 32768 + int(_u(self.seed, d, k, 8) * 28000)})
        factor = 0.6 + 0.8 * _u(self.seed, d, 9)
        level = factor * _diurnal(t_ms / 1000.0) * self.interval
        net = {"bytes_out": tpl.rate_out * level * (0.85 + 0.3 * _u(self.seed, d, k, 10)),
               "bytes_in": tpl.rate_in * level * (0.85 + 0.3 * _u(self.seed, d, k, 11))}
        net["packets_out"] = net["bytes_out"] / tpl.packet_out
        net["packets_in"] = net["bytes_in"] / tpl.packet_in
        for a in active:
            if a.kind == "listening-port":
                tcp.append({"port": int(a.value), "interface": self._iface} if self._iface else {"port": int(a.value)})
            elif a.kind == "udp-port":
                udp.append({"port": int(a.value)})
            elif a.kind == "connections":
                for i in range(int(a.value)):
                    conns.append({"remote_addr": f"{ANOMALY_REMOTE_NET}{1 + i % 254}:{40000 + i}",
                                  "local_port": 1024 + i})
            elif a.kind in _NET_KEY:
                key = _NET_KEY[a.kind]
                net[key] = net[key] * a.value if a.op == "x" else net[key] + a.value
                if a.kind.startswith("bytes"):  # more bytes travel in more packets
                    pkey = "packets" + key[5:]
                    size = tpl.packet_out if key.endswith("out") else tpl.packet_in
                    net[pkey] = net[key] / size
        metrics: dict = {
            "listening_tcp_ports": {"ports": tcp, "total": len(tcp)},
            "listening_udp_ports": {"ports": udp, "total": len(udp)},
            "tcp_connections": {"established_connections": {"connections": conns, "total": len(conns)}},
            "network_stats": {k: max(0, int(round(v))) for k, v in net.items()},
        }
        out = {"header": {"report_id": t_ms, "version": rpt.VERSION}, "metrics": metrics}
        if tpl.custom_metrics:
            out["custom_metrics"] = tpl.custom_metrics
        return out

    def line(self, d: int, report: dict, received_ms: int) -> bytes:
        thing = self.thing_name(d)
        if self.fmt == "json":
            obj = dict(report)
        else:
            obj = {"report": base64.b64encode(rpt.encode(report, "cbor")).decode()}
        obj["thingName"] = thing
        obj["receivedAt"] = received_ms
        return json.dumps(obj, separators=(",", ":")).encode() + b"\n"

    def rounds(self) -> Iterator[Tuple[int, int, int, int, List[Anomaly]]]:
        """(slot, device, k, t_ms, active anomalies) in event-time order; a stopped device yields nothing."""
        for k in range(self.reports_per_device):
            for slot in range(self.devices):
                d = self.device_at(slot)
                t_ms = self.time_ms(slot, k)
                active: List[Anomaly] = []
                mine = self.by_device.get(d)
                if mine:
                    offset = (t_ms - self.start_ms) / 1000.0
                    active = [a for a in mine if a.active(offset)]
                    if any(a.kind == "stop" for a in active):
                        continue
                yield slot, d, k, t_ms, active


@dataclass
class Delivery:
    """Imperfect delivery, as the stream may see it: a fraction of the reports twice, a fraction late."""
    duplicates: float = 0.0
    late_fraction: float = 0.0
    late_seconds: float = 0.0

    def check(self, fleet: Fleet) -> None:
        for name, p in (("--duplicates", self.duplicates), ("--late fraction", self.late_fraction)):
            if not 0.0 <= p <= 1.0:
                raise SimulationError(f"{name} must be a probability 0..1, got {p}")
        if not 0 <= self.late_seconds <= MAX_LATE_SECONDS:
            raise SimulationError(f"--late seconds must be 0..{MAX_LATE_SECONDS}, got {self.late_seconds}")
        # late reports wait in memory: bound how many can wait at once
        per_second = fleet.devices / fleet.interval
        pending = self.late_fraction * per_second * self.late_seconds
        if pending > MAX_LATE_PENDING:
            raise SimulationError(f"--late {self.late_fraction}:{self.late_seconds:g} would hold ~{pending:,.0f} "
                                  f"reports back at once; at most {MAX_LATE_PENDING:,}")


def parse_late(text: str) -> Tuple[float, float]:
    """'P:SECONDS' -> (P, seconds)."""
    p, sep, s = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return float(p), float(s)
    except ValueError:
        raise SimulationError(f"--late {text!r}: expected FRACTION:SECONDS, e.g. 0.01:120") from None


def estimate_bytes(fleet: Fleet, delivery: Delivery) -> int:
    """The output's size, from a sample of lines (stated before anything is written)."""
    sample = min(fleet.devices, 50)
    size = sum(len(fleet.line(d, fleet.report(d, 0, fleet.start_ms, []), fleet.start_ms)) for d in range(sample))
    return int(size / sample * fleet.total_reports * (1 + delivery.duplicates))


@dataclass
class Result:
    reports: int = 0  # distinct reports
    lines: int = 0  # lines written (duplicates included)
    duplicates: int = 0
    late: int = 0
    validated: int = 0
    bytes: int = 0
    first_ms: Optional[int] = None
    last_ms: Optional[int] = None
    hits: Dict[str, dict] = field(default_factory=dict)  # anomaly spec -> reports that carried it


def write(fleet: Fleet, out: Any, delivery: Optional[Delivery] = None, validate: str = "auto",
          progress: Optional[Callable[[Result], None]] = None, progress_every: float = 2.0) -> Result:
    """Writes the fleet's lines to the binary file `out`, streaming. validate: all, none or auto (all reports
    up to VALIDATE_ALL_UP_TO, else an even sample of about VALIDATE_SAMPLE plus every anomalous report)."""
    from ggdefender.collector.schema import validate_report

    delivery = delivery or Delivery()
    delivery.check(fleet)
    total = fleet.total_reports
    if validate not in ("all", "none", "auto"):
        raise SimulationError(f"validate must be all, none or auto, got {validate!r}")
    every = 1 if validate == "all" or total <= VALIDATE_ALL_UP_TO else max(1, total // VALIDATE_SAMPLE)
    res = Result(hits={a.spec: {"reports": 0, "firstReport": None, "lastReport": None} for a in fleet.anomalies})
    late: List[Tuple[int, int, bytes]] = []  # (due ms, sequence, line)
    seq, last_progress = 0, time.monotonic()

    def emit(data: bytes) -> None:
        out.write(data)
        res.lines += 1
        res.bytes += len(data)

    for n, (slot, d, k, t_ms, active) in enumerate(fleet.rounds()):
        while late and late[0][0] <= t_ms:
            emit(heapq.heappop(late)[2])
        report = fleet.report(d, k, t_ms, active)
        if validate != "none" and (n % every == 0 or active):
            problems = validate_report(rpt.encode(report, fleet.fmt), fleet.fmt)
            if problems:  # a bug here, not bad input: stop before writing a report Device Defender refuses
                raise RuntimeError(f"simulated report of {fleet.thing_name(d)} at {t_ms} is invalid: {problems[:3]}")
            res.validated += 1
        for a in active:
            h = res.hits[a.spec]
            h["reports"] += 1
            h["firstReport"] = h["firstReport"] or t_ms
            h["lastReport"] = t_ms
        received = t_ms + 50 + int(_u(fleet.seed, d, k, 12) * 750)  # device -> IoT Core -> rule
        data = fleet.line(d, report, received)
        res.reports += 1
        res.first_ms = t_ms if res.first_ms is None else res.first_ms
        res.last_ms = t_ms
        if delivery.late_fraction and _u(fleet.seed, d, k, 13) < delivery.late_fraction:
            due = t_ms + int(delivery.late_seconds * 1000)
            seq += 1
            heapq.heappush(late, (due, seq, data))
            res.late += 1
        else:
            emit(data)
        if delivery.duplicates and _u(fleet.seed, d, k, 14) < delivery.duplicates:
            emit(data)  # at-least-once delivery: the same record again
            res.duplicates += 1
        if progress and n % 4096 == 0 and time.monotonic() - last_progress >= progress_every:
            last_progress = time.monotonic()
            progress(res)
    while late:
        emit(heapq.heappop(late)[2])
    return res


def truth(fleet: Fleet, res: Result, delivery: Optional[Delivery] = None) -> dict:
    """The ground truth the benchmark scores against: which device, which metrics, from when to when."""
    delivery = delivery or Delivery()
    end_ms = fleet.start_ms + fleet.reports_per_device * fleet.interval * 1000
    anomalies = []
    for a in fleet.anomalies:
        h = res.hits[a.spec]
        frm = fleet.start_ms + int(a.start * 1000)
        to = end_ms if a.duration is None else min(end_ms, frm + int(a.duration * 1000))
        anomalies.append({"spec": a.spec, "thingName": fleet.thing_name(a.device), "kind": a.kind,
                          "metrics": ANOMALY_METRICS[a.kind], "value": a.value if a.kind != "stop" else None,
                          "op": a.op or None, "from": frm, "to": to, "reports": h["reports"],
                          "firstReport": h["firstReport"], "lastReport": h["lastReport"]})
    tpl = fleet.template
    return {"devices": fleet.devices, "thingNames": f"{fleet.thing_name(0)} .. {fleet.thing_name(fleet.devices - 1)}",
            "reportsPerDevice": fleet.reports_per_device, "interval": fleet.interval, "seed": fleet.seed,
            "format": fleet.fmt, "start": fleet.start_ms, "end": end_ms, "firstReport": res.first_ms,
            "lastReport": res.last_ms, "reports": res.reports, "lines": res.lines, "duplicates": res.duplicates,
            "late": res.late, "lateSeconds": delivery.late_seconds, "validated": res.validated,
            "fleet": {"listeningTcpPorts": sorted({p for p, _ in tpl.tcp}),
                      "listeningUdpPorts": sorted({p for p, _ in tpl.udp}),
                      "templateReports": tpl.reports, "bytesOutPerSecond": round(tpl.rate_out, 3),
                      "bytesInPerSecond": round(tpl.rate_in, 3)},
            "anomalies": anomalies}

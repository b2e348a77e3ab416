"""The fleet tier's streaming job on this machine: throughput, latency, detection and false positives.

Simulates fleets with `ggdefender fleet simulate` (reports derived from this machine's collector output,
anomalies injected with ground truth), runs `ggdefender fleet run` (PyFlink on a local mini-cluster) over
them with docs/examples/fleet-profile.json, and prints:

- throughput (reports/s, as the job's stats report them, and including the job's start) at 10,000 and
  100,000 devices, and the ratio to what such a fleet sends at one report per 5 minutes (33/s, 333/s);
- throughput at parallelism 1 and 2 (ratio);
- latency from a report to its violation, as the job reports it (its stats), and the detection delay in
  event time (the injected anomaly's first report -> the violation's event time: window closing included);
- detection: every injected anomaly found (recall), on the metrics the truth names;
- false positives: violations on devices and times without an injected anomaly, on a clean fleet and on the
  anomalous fleets. A statistical behavior (bytes out above the fleet's p99) flags the fleet's top 1% by
  definition (AWS Detect does the same): those are counted apart, as the rank tail, with their rate.

Figures and ratios only: nothing here asserts a time.

    .venv/bin/python bench/fleet_bench.py            # full: 10,000 x 12 and 100,000 x 2 reports (~15 min)
    .venv/bin/python bench/fleet_bench.py --quick    # 300 devices: checks every piece runs
    .venv/bin/python bench/fleet_bench.py --json results.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PROFILE = REPO / "docs" / "examples" / "fleet-profile.json"
START = "2026-01-01T00:00:00Z"
REPORT_INTERVAL = 300  # seconds: Device Defender's production interval
STATISTICAL_QUANTILE = 99.0  # the example profile's bytes-out-p99
RUN_TIMEOUT = 3600


def log(msg: str) -> None:
    print(f"[fleet-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def thing(devices: int, index: int) -> str:
    return f"thing-{index:0{len(str(devices - 1))}d}"


def anomalies(devices: int) -> List[str]:
    """One anomaly of each kind within the first 20 minutes (4 reports), on devices spread over the fleet."""
    t = lambda i: thing(devices, i * devices // 1000 + 7)  # noqa: E731
    return [f"{t(42)}@10m:listening-port=8888",
            f"{t(500)}@5m+10m:bytes-out=x50",
            f"{t(3)}@0m+15m:connections=+40",  # 3 reports: the connections rule needs 2 in a row
            f"{t(900)}@5m+10m:connections=+300",  # a report over 16 KiB: aws:message-byte-size too
            f"{t(9)}@10m:stop"]


def short_anomalies(devices: int) -> List[str]:
    """The same kinds within two reports (the 100,000-device fleet is simulated for 10 minutes)."""
    t = lambda i: thing(devices, i * devices // 1000 + 7)  # noqa: E731
    return [f"{t(42)}@5m:listening-port=8888", f"{t(500)}@5m+5m:bytes-out=x50",
            f"{t(3)}@0m+10m:connections=+40", f"{t(900)}@0m+10m:connections=+300", f"{t(9)}@5m:stop"]


def simulate(out: Path, devices: int, reports: int, specs: List[str], duplicates: float = 0.0) -> dict:
    truth = out.with_suffix(".truth.json")
    argv = [sys.executable, "-m", "ggdefender", "fleet", "simulate", "--devices", str(devices),
            "--reports-per-device", str(reports), "--interval", str(REPORT_INTERVAL), "--start", START,
            "--seed", "14", "--out", str(out), "--truth", str(truth)]
    for s in specs:
        argv += ["--anomaly", s]
    if duplicates:
        argv += ["--duplicates", str(duplicates)]
    t0 = time.monotonic()
    subprocess.run(argv, check=True, timeout=RUN_TIMEOUT, env=_env())
    log(f"simulated {devices:,} devices x {reports} reports in {time.monotonic() - t0:.1f} s")
    return json.loads(truth.read_text())


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "components") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def profile_for(truth: dict, work: Path) -> Path:
    """The example profile with its allow-list holding the simulated devices' own listening ports (the image
    the fleet was derived from: this machine's), as an operator lists the ports of the image they ship."""
    doc = json.loads(PROFILE.read_text())
    for b in doc["behaviors"]:
        if b["name"] == "listening-ports":
            ports = sorted(set(b["criteria"]["value"]["ports"]) | set(truth["fleet"]["listeningTcpPorts"]))
            b["criteria"]["value"]["ports"] = ports
    path = work / "profile.json"
    path.write_text(json.dumps(doc, indent=1))
    return path


def run_job(inp: Path, profile: Path, parallelism: int, out: Path) -> dict:
    """`ggdefender fleet run`; its stats (records, violations, wall seconds, reports/s) and our own wall time."""
    argv = [sys.executable, "-m", "ggdefender", "fleet", "run", "--profile", str(profile), "--input", str(inp),
            "--out", str(out), "--parallelism", str(parallelism)]
    stats_path = Path(str(out) + ".stats.json")
    if stats_path.exists() and out.exists():  # --work of an interrupted bench: this run is done, keep it
        log(f"reusing {out}")
        stats = json.loads(stats_path.read_text())
        wall = stats["wall_seconds"]
    else:
        t0 = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=RUN_TIMEOUT, env=_env())
        wall = time.monotonic() - t0
        if done.returncode != 0:
            raise RuntimeError(f"fleet run exited {done.returncode}: {(done.stderr or done.stdout)[-1500:]}")
        stats = json.loads(stats_path.read_text())
    violations = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
    return {"stats": stats, "wall_s": wall, "violations": violations}


RATE_NAMES = ("reports_per_second", "reports_per_s", "reportsPerSecond")


def normalize(res: dict) -> dict:
    """Rates from the job's stats where an earlier version of this bench missed their name."""
    for key in ("fleet_10k", "fleet_100k", "clean"):
        for run in ((res.get(key) or {}).get("runs") or {}).values():
            if run.get("reports_per_s") is None:
                run["reports_per_s"] = _stat(run["stats"], *RATE_NAMES)
    return res


def _stat(stats: dict, *names: str) -> Optional[float]:
    """A figure from the job's stats under any of the names it may use (nested one level too)."""
    for name in names:
        if isinstance(stats.get(name), (int, float)):
            return float(stats[name])
    for v in stats.values():
        if isinstance(v, dict):
            got = _stat(v, *names)
            if got is not None:
                return got
    return None


def score(truth: dict, violations: List[dict], profile: dict) -> dict:
    """Recall on the injected anomalies; every other in-alarm violation is a false positive, except the
    statistical behavior's rank tail (the devices above the fleet's p99), counted apart."""
    metric_of = {b["name"]: b["metric"] for b in profile["behaviors"]}
    statistical = {b["name"] for b in profile["behaviors"] if "statisticalThreshold" in b["criteria"]}
    window_ms = max(b["criteria"].get("durationSeconds", 0) for b in profile["behaviors"]) * 1000
    slack_ms = window_ms + 2 * REPORT_INTERVAL * 1000  # a window closes, and a streak needs two reports
    alarms = [v for v in violations if v.get("violationEventType") == "in-alarm"]
    found, delays, fps, tail = [], [], [], []
    covered = set()
    for a in truth["anomalies"]:
        if not a["metrics"]:  # stop: a device that goes quiet is not a violation in Detect either
            continue
        hits = [v for v in alarms if v["thingName"] == a["thingName"]
                and metric_of.get(v["behavior"]["name"]) in a["metrics"]
                and a["from"] <= v["violationEventTime"] * 1000 <= a["to"] + slack_ms]
        found.append({"spec": a["spec"], "found": bool(hits),
                      "behaviors": sorted({v["behavior"]["name"] for v in hits})})
        if hits:
            delays.append(min(v["violationEventTime"] for v in hits) * 1000 - a["firstReport"])
    for v in alarms:
        on_anomaly = any(v["thingName"] == a["thingName"] and a["from"] <= v["violationEventTime"] * 1000
                         <= a["to"] + slack_ms for a in truth["anomalies"])
        if on_anomaly:
            covered.add(v["violationId"])
        elif v["behavior"]["name"] in statistical:
            tail.append(v)
        else:
            fps.append(v)
    windows = truth["reportsPerDevice"]  # one 300 s window per report interval
    return {"anomalies": len(found), "found": sum(f["found"] for f in found), "detail": found,
            "event_time_delay_s": [d / 1000 for d in delays],
            "false_positives": len(fps), "false_positive_examples": [
                {k: v.get(k) for k in ("thingName", "behavior", "violationEventTime", "metricValue")}
                for v in fps[:5]],
            "rank_tail": len(tail), "rank_tail_rate": len(tail) / max(1, truth["devices"] * windows),
            "in_alarm": len(alarms), "on_anomalies": len(covered)}


def measure(name: str, work: Path, devices: int, reports: int, specs: List[str], parallelisms: List[int],
            duplicates: float = 0.0) -> dict:
    inp = work / f"{name}.jsonl"
    truth = simulate(inp, devices, reports, specs, duplicates)
    profile_path = profile_for(truth, work)
    profile = json.loads(profile_path.read_text())
    res: Dict = {"devices": devices, "reports_per_device": reports, "lines": truth["lines"],
                 "input_mb": inp.stat().st_size / 1e6, "runs": {}}
    for p in parallelisms:
        log(f"{name}: fleet run, parallelism {p}, {truth['lines']:,} lines")
        job = run_job(inp, profile_path, p, work / f"{name}-p{p}.violations.jsonl")
        stats = job["stats"]
        rate = _stat(stats, *RATE_NAMES)
        records = _stat(stats, "records", "reports") or truth["lines"]
        run = {"stats": stats, "wall_s": job["wall_s"], "reports_per_s": rate,
               "reports_per_s_with_start": records / job["wall_s"],
               "latency_s": {k: v for k, v in stats.items() if "latency" in k.lower()},
               "score": score(truth, job["violations"], profile)}
        res["runs"][p] = run
        sc = run["score"]
        log(f"{name} p{p}: {fmt_rate(rate)} reports/s ({records / job['wall_s']:,.0f}/s with the job's start), "
            f"found {sc['found']}/{sc['anomalies']}, false positives {sc['false_positives']}, "
            f"rank tail {sc['rank_tail']}")
    for f in (inp,):
        f.unlink()  # big: keep only the results
    return res


def _violation_files(directory: Path) -> List[Path]:
    return [f for f in directory.rglob("*") if f.is_file()] if directory.exists() else []


def latency(work: Path, devices: int = 50, probes: int = 2, probe_timeout: float = 360.0) -> dict:
    """Report -> violation in wall time, on a continuous run (`fleet run --follow`): a feeder drops a file every
    second with one report of each of `devices` devices stamped now (a steady stream, as Kinesis delivers it);
    in each probe one device's report has a new listening port, and the job's output is watched for that
    device's violation. Emitted: the line is in the sink's in-progress part file; committed: in a finished
    part file (the FileSink commits at each checkpoint, every second here: exactly-once output). The port
    allow-list needs no fleet rank, so its verdict comes once the watermark passes the report plus the allowed
    lateness; the long probe timeout covers a loaded machine."""
    import threading

    sys.path.insert(0, str(REPO / "components"))
    from ggdefender.fleet import simulate as sim

    base = work / "latency"
    shutil.rmtree(base, ignore_errors=True)  # a run's files must not be read as this run's (stale input, output)
    inp, chk = base / "input", base / "checkpoints"
    inp.mkdir(parents=True, exist_ok=True)
    template = sim.template_from_reports(sim.collect_reports())
    truth = {"fleet": {"listeningTcpPorts": sorted({p for p, _ in template.tcp})}}
    profile = profile_for(truth, base)
    victims: Dict[str, float] = {}  # thing -> monotonic time its anomalous report was dropped
    wanted: List[str] = []  # things whose next report carries the anomaly
    stop = threading.Event()

    def feed() -> None:
        n = 0
        while not stop.is_set():
            specs = [f"{wanted.pop()}@0s:listening-port=8888"] if wanted else []
            fleet = sim.Fleet(devices=devices, reports_per_device=1, interval=1, start_ms=int(time.time() * 1000),
                              seed=3, template=template, anomalies=[sim.parse_anomaly(x, devices) for x in specs])
            staging = base / f"feed-{n}.jsonl"
            with open(staging, "wb") as fh:
                sim.write(fleet, fh, validate="none")
            staging.rename(inp / staging.name)  # atomic: the source never sees half a file
            for x in specs:
                victims[x.split("@")[0]] = time.monotonic()
            n += 1
            stop.wait(1.0)

    argv = [sys.executable, "-m", "ggdefender", "fleet", "run", "--profile", str(profile), "--input", str(inp),
            "--follow", "0.2", "--checkpoint-dir", str(chk), "--checkpoint-interval", "1",
            "--allowed-lateness", "5", "--out", str(base / "violations.jsonl")]
    out_dir = chk / "output" / "violations"
    errlog = open(base / "run.stderr", "wb")
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    job = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=errlog, env=_env())
    results: List[dict] = []
    try:
        time.sleep(30)  # the job's start (JVM, Python workers), then a steady state
        if job.poll() is not None:
            raise RuntimeError(f"fleet run --follow exited {job.returncode}: "
                               f"{(base / 'run.stderr').read_text()[-1000:]}")
        for k in range(probes):
            victim = thing(devices, (7 + 13 * k) % devices)
            wanted.append(victim)
            t0 = time.monotonic()
            while victim not in victims and time.monotonic() - t0 < 10:
                time.sleep(0.01)
            emitted = committed = None
            while time.monotonic() - t0 < probe_timeout and committed is None:
                for f in _violation_files(out_dir):
                    try:
                        text = f.read_text()
                    except OSError:
                        continue  # rolled or committed under us: read it at the next look
                    if f'"thingName": "{victim}"' in text or f'"thingName":"{victim}"' in text:
                        now = time.monotonic() - victims.get(victim, t0)
                        emitted = emitted if emitted is not None else now
                        if not f.name.startswith("."):
                            committed = now
                time.sleep(0.05)
            results.append({"thing": victim, "emitted_s": emitted, "committed_s": committed})
            log(f"latency probe {k}: emitted {emitted} s, committed {committed} s")
    finally:
        stop.set()
        job.send_signal(2)  # Ctrl-C: the command cancels its job
        try:
            job.wait(timeout=60)
        except subprocess.TimeoutExpired:
            job.kill()
            job.wait()
        errlog.close()
    return {"devices": devices, "probes": results}


def fmt_rate(v: Optional[float]) -> str:
    return "n/a" if v is None else f"{v:,.0f}"


PHASES = ("fleet_10k", "fleet_100k", "clean", "latency")


def run(quick: bool, work: Path, phases: tuple = PHASES, res: Optional[dict] = None,
        save: Optional[Path] = None) -> dict:
    """The phases into `res` (results of an earlier invocation are kept: a bench can be run piecewise)."""
    small, big, per = (300, 1000, 6) if quick else (10_000, 100_000, 12)
    res = res if res is not None else {}
    res.update({"quick": quick, "machine_cores": os.cpu_count(),
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load": os.getloadavg()})
    def saved() -> None:  # after each phase: a long bench that is stopped keeps what it measured
        if save:
            save.write_text(json.dumps(res, indent=1, default=str))

    for phase in phases:
        if phase == "fleet_10k":
            res[phase] = measure("fleet-small", work, small, per, anomalies(small), [1, 2], duplicates=0.001)
        elif phase == "fleet_100k":
            res[phase] = measure("fleet-big", work, big, 2, short_anomalies(big), [2])
        elif phase == "clean":
            res[phase] = measure("clean", work, small, 4, [], [1, 2])
        elif phase == "latency":
            try:
                res[phase] = latency(work)
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                res[phase] = {"skipped": str(exc)[:500]}
        else:
            raise SystemExit(f"unknown phase {phase!r} (phases: {', '.join(PHASES)})")
        saved()
    return res


def need_rate(devices: int) -> float:
    return devices / REPORT_INTERVAL


def latency_lines(lat: Optional[dict]) -> List[str]:
    if not lat:
        return ["latency (continuous run): not measured"]
    if "skipped" in lat:
        return [f"latency (continuous run): not measured: {lat['skipped']}"]
    got = [p for p in lat["probes"] if p["emitted_s"] is not None]
    if not got:
        return [f"latency (continuous run, {lat['devices']:,} devices per file): no violation appeared within the "
                f"probe's time in {len(lat['probes'])} probes"]
    em = sorted(p["emitted_s"] for p in got)
    co = sorted(p["committed_s"] for p in got if p["committed_s"] is not None)
    return [f"latency (continuous run, a file of {lat['devices']:,} reports dropped, one with a new listening port): "
            f"emitted {em[0]:.1f}-{em[-1]:.1f} s, committed (exactly-once, at the next checkpoint) "
            + (f"{co[0]:.1f}-{co[-1]:.1f} s" if co else "n/a") + f" ({len(got)}/{len(lat['probes'])} probes)"]


def report(res: dict) -> List[str]:
    """The figures as lines of text (also the performance doc's table rows)."""
    normalize(res)
    L = []
    for key in ("fleet_10k", "fleet_100k", "clean"):
        f = res.get(key)
        if not f:
            continue
        for p, run in sorted(f["runs"].items(), key=lambda kv: int(kv[0])):
            rate, sc = run["reports_per_s"], run["score"]
            need = need_rate(f["devices"])
            ratio = f"{rate / need:,.1f}x" if rate else "n/a"
            L.append(f"{key} ({f['devices']:,} devices x {f['reports_per_device']} reports, {f['lines']:,} lines) "
                     f"parallelism {p}: {fmt_rate(rate)} reports/s = {ratio} the {need:,.0f}/s the fleet sends; "
                     f"{run['reports_per_s_with_start']:,.0f}/s including the job's start ({run['wall_s']:.0f} s)")
            if sc["anomalies"]:
                delays = sc["event_time_delay_s"]
                L.append(f"  detection: {sc['found']}/{sc['anomalies']} injected anomalies found; event-time delay "
                         f"(first anomalous report -> violation) {min(delays):.0f}-{max(delays):.0f} s"
                         if delays else f"  detection: {sc['found']}/{sc['anomalies']} injected anomalies found")
                for d in sc["detail"]:
                    L.append(f"    {d['spec']}: {'found by ' + ', '.join(d['behaviors']) if d['found'] else 'MISSED'}")
            L.append(f"  false positives: {sc['false_positives']}; statistical rank tail (devices above the fleet's "
                     f"p99, by definition): {sc['rank_tail']} = {100 * sc['rank_tail_rate']:.2f}% of device-windows")
            if run["latency_s"]:
                L.append("  latency (the job's stats): " + ", ".join(f"{k} {v}" for k, v in run["latency_s"].items()))
    L += latency_lines(res.get("latency"))
    ex = extrapolate(res)
    if ex and ex["scaling_1_2"]:
        L.append(f"parallelism 1 -> 2 ({ex['fleet']}): {ex['scaling_1_2']:.2f}x "
                 f"({fmt_rate(ex['per_subtask'])} -> {fmt_rate(ex['p2'])} reports/s)")
    return L


# == docs/performance.md's "Fleet tier" section (bench/suite.py writes it with the rest) ==========================
TARGET_DEVICES = 10_000_000
MSF_KPU_QUOTA = 64  # Managed Service for Apache Flink's default KPUs per application (adjustable)
KPU_UTILISATION = 0.7  # plan KPUs for 70 % load: headroom for catch-up after a restart and for daily peaks


def extrapolate(res: dict) -> Optional[dict]:
    """Parallelism for 10,000,000 devices from the measured rate per parallel subtask (one core each)."""
    normalize(res)
    p1 = p2 = None
    fleet = ""
    for key in ("clean", "fleet_10k"):  # the clean fleet runs both parallelisms back to back, on the same build
        runs = (res.get(key) or {"runs": {}})["runs"]
        p1 = (runs.get(1) or runs.get("1") or {}).get("reports_per_s")
        p2 = (runs.get(2) or runs.get("2") or {}).get("reports_per_s")
        fleet = key
        if p1 and p2:
            break
    if not p1:
        return None
    need = need_rate(TARGET_DEVICES)
    per_subtask = p1
    parallelism = int(-(-need // (per_subtask * KPU_UTILISATION)))
    return {"need": need, "per_subtask": per_subtask, "p2": p2, "fleet": fleet, "scaling_1_2": (p2 / p1) if p2 else None,
            "parallelism": parallelism, "kpus": parallelism + 1}


def markdown(res: Optional[dict]) -> List[str]:
    L = ["## Fleet tier", ""]
    if not res or "fleet_10k" not in res:
        return L + [f"Skipped: {(res or {}).get('skipped', 'not run')}", ""]
    normalize(res)
    L += ["`bench/fleet_bench.py`: the streaming job (`ggdefender fleet run`, PyFlink 1.20.3 on a local "
          "mini-cluster, Java 17) over fleets made by `ggdefender fleet simulate` (reports derived from this "
          "machine's collector output, one every 300 s per device, anomalies injected with ground truth), with "
          "docs/examples/fleet-profile.json (its allow-list set to the simulated image's ports; the ML behavior has "
          "no model in this run, so it gives no verdict). *Reports/s* is the job's own figure (its stats); "
          "*with start* divides by the whole command's wall time, the ~15 s of starting the JVM and the Python "
          "workers included.", "",
          "| fleet | lines | parallelism | reports/s | with start | needed (1 per 300 s) | ratio | anomalies found | "
          "false positives | p99 rank tail |", "|---|---|---|---|---|---|---|---|---|---|"]
    for key in ("fleet_10k", "fleet_100k", "clean"):
        f = res.get(key)
        if not f:
            continue
        for p, run in sorted(f["runs"].items(), key=lambda kv: int(kv[0])):
            rate, sc, need = run["reports_per_s"], run["score"], need_rate(f["devices"])
            label = f"{f['devices']:,} devices" + (" (clean)" if key == "clean" else "")
            L.append(f"| {label} | {f['lines']:,} | {p} | {fmt_rate(rate)} | {run['reports_per_s_with_start']:,.0f} | "
                     f"{need:,.0f} | {(rate / need if rate else float('nan')):,.1f}x | "
                     f"{sc['found']}/{sc['anomalies'] if sc['anomalies'] else '-'} | {sc['false_positives']} | "
                     f"{sc['rank_tail']} ({100 * sc['rank_tail_rate']:.2f} %) |")
    same = []
    for key in ("fleet_10k", "clean"):
        runs = list(((res.get(key) or {}).get("runs") or {}).values())
        counts = {r["stats"].get("violations") for r in runs}
        if len(runs) > 1 and len(counts) == 1:
            same.append(f"{res[key]['devices']:,} devices{' (clean)' if key == 'clean' else ''}: "
                        f"{counts.pop():,} violation events")
    if same:
        L += ["", "Parallelism 1 and 2 emit the same violations (" + "; ".join(same) + ")."]
    if res.get("load"):
        L += [f"Load average when the bench started: {', '.join(f'{x:.1f}' for x in res['load'])} on {res.get('machine_cores')} "
              "cores: other jobs (other Flink runs among them) shared the machine, so these rates are a floor."]
    delays = [d for k in ("fleet_10k", "fleet_100k") for r in (res.get(k) or {"runs": {}})["runs"].values()
              for d in r["score"]["event_time_delay_s"]]
    lat = [r["latency_s"] for k in ("fleet_10k", "fleet_100k", "clean") for r in (res.get(k) or {"runs": {}})["runs"].values()
           if r["latency_s"]]
    L += ["", "Each injected anomaly (a new listening port, bytes out x50, +40 connections for 15 minutes, +300 "
          "connections that also make the report larger than 16 KiB, a device that stops) is searched among the "
          "in-alarm violations of its thing on the metrics the ground truth names; every other in-alarm violation "
          "is a false positive, except the statistical behavior's rank tail: \"bytes out at most the fleet's p99\" "
          "flags about 1 % of the devices in every window by its definition (AWS Detect does the same), so those "
          "are counted apart. A stopped device is not a violation (nor in AWS Detect); the job invalidates its "
          "alarms after two days."]
    if delays:
        L.append(f"Detection delay in event time (the first anomalous report -> the violation's event time): "
                 f"{min(delays):.0f}–{max(delays):.0f} s: per-report rules alarm at the report, a 300 s window "
                 f"alarms when it closes, and a rule with consecutiveDatapointsToAlarm 2 at the second report.")
    if lat:
        L.append("Latency reported by the job (event time -> wall time of emission): "
                 + "; ".join(", ".join(f"{k} {v}" for k, v in x.items()) for x in lat) + ".")
    L += ["", "Latency from a report to its violation, in wall time: " + latency_lines(res.get("latency"))[0]
          + ". The continuous run is `fleet run --follow 0.2 --checkpoint-interval 1 --allowed-lateness 5`, fed a "
          "file a second with one report of each of 50 devices stamped now. The latency includes the file source's discovery of the new file, parsing, the watermark passing the "
          "report's time plus the allowed lateness (a verdict waits for it, so late reports of the fleet are "
          "still ranked) and, for *committed*, the FileSink's commit at the next checkpoint."]
    ex = extrapolate(res)
    if ex:
        scale = f"{ex['scaling_1_2']:.2f}x" if ex["scaling_1_2"] else "n/a"
        L += ["", "### Extrapolation to 10,000,000 devices", "",
              f"10,000,000 devices reporting every 300 s send {ex['need']:,.0f} reports/s. Measured here: "
              f"{ex['per_subtask']:,.0f} reports/s for one parallel subtask (parallelism 1, one core), "
              f"and {scale} going from parallelism 1 to 2 on this 2-core machine (the second core is shared with the "
              f"JVM, the Python workers and whatever else runs). Assumptions: one subtask per KPU (Managed Service "
              f"for Apache Flink's default: 1 vCPU and 4 GiB per KPU, `ParallelismPerKPU` 1) runs at least the rate "
              f"of one core here; the job is keyed by thing, so the per-thing work spreads evenly over subtasks; "
              f"the fleet-wide ranking per (behavior, window) is a small merge of per-subtask distributions, not a "
              f"per-report cost; KPUs planned for {int(100 * KPU_UTILISATION)} % load (headroom to catch up after a "
              f"restart from a checkpoint, and for bursts when many devices reconnect at once).", "",
              f"Parallelism needed: {ex['need']:,.0f} / ({ex['per_subtask']:,.0f} x {KPU_UTILISATION}) = "
              f"**{ex['parallelism']}**, i.e. {ex['kpus']} KPUs with the one KPU Managed Service for Apache Flink "
              f"adds per application for orchestration"
              + (f" (above the service's default quota of {MSF_KPU_QUOTA} KPUs per application: ask for more, or "
                 f"split the fleet over applications by a hash of the thing name, each with its own ranks)"
                 if ex["kpus"] > MSF_KPU_QUOTA else "")
              + f". The Kinesis stream needs at least "
              f"{int(-(-ex['need'] // 1000))} shards (1,000 records/s per shard for writes) and the job's source "
              f"parallelism should not exceed the shard count. What this does not measure: Kinesis and "
              f"checkpointing to S3 (RocksDB state of ~10,000,000 things x behaviors), the network between "
              f"TaskManagers, and hot keys (a thing is a key; no single thing sends more than one report per "
              f"interval, so none is hot). Measure on the service before sizing a production fleet.", "",
              "Why the scaling from 1 to 2 is weak here, and why a subtask is slow. On a local mini-cluster PyFlink "
              "runs every Python operator of every subtask in the client's own Python process (\"loopback\" mode, "
              "pyflink's default when the cluster is local), so parallelism 2 shares one interpreter and its lock; a "
              "cluster (and Managed Service for Apache Flink) starts a Python worker process per subtask instead. Per "
              "report, the job's own logic is cheap (`fleet/evaluation.py`'s `evaluate()`, the same logic in plain "
              "Python, runs on the order of 10,000 reports/s here); the rest is PyFlink's crossing between the JVM "
              "and Python, several times per report (parse, partition, event time, the keyed stages). Moving the "
              "parsing, partitioning and timestamps to Flink's Java side (Flink SQL's JSON functions) and crossing "
              "to Python once per report is the way to a several-fold higher rate per KPU; it is not done yet.", ""]
    return L


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small fleets (300 and 1,000 devices): a smoke run")
    ap.add_argument("--json", type=Path, help="write the raw results here")
    ap.add_argument("--work", type=Path, help="where the simulated fleets go (default: a temp dir)")
    ap.add_argument("--only", help=f"comma list of phases ({','.join(PHASES)}); with --json, the file's other "
                                   "results are kept")
    ap.add_argument("--markdown", type=Path, help="write docs/performance.md's Fleet tier section here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="ggd-fleet-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        phases = tuple(args.only.split(",")) if args.only else PHASES
        earlier = json.loads(args.json.read_text()) if args.only and args.json and args.json.exists() else {}
        res = run(args.quick, work, phases, earlier, save=args.json)
    for line in report(res):
        print(line)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text("\n".join(markdown(res)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Measure the AWS reference collector (AWSIoTDeviceDefenderAgentSDK) in its own venv, on request.

Run with the reference venv's python (bench/suite.py starts it); it must not import ggdefender. It keeps
one long-lived `Collector(short_metrics_names=False)` and times `collect_metrics()` + `to_json_string()`,
exactly what the AWS Greengrass Device Defender component does per report.

Protocol (one JSON object per line): stdin `{"reps": K}` -> stdout
`{"times": [seconds, ...], "cpu": [seconds, ...], "bytes": N, "maxrss_kib": N}`. EOF on stdin ends the worker.
A first line `{"ready": true, "version": "..."}` is printed once the collector exists.
"""

import json
import resource
import sys
import time


def main() -> int:
    try:
        from AWSIoTDeviceDefenderAgentSDK.collector import Collector
    except ImportError as exc:
        print(json.dumps({"error": f"reference agent not installed in this interpreter: {exc}"}), flush=True)
        return 2
    try:
        from importlib.metadata import version

        ver = version("AWSIoTDeviceDefenderAgentSDK")
    except Exception:  # metadata is only informative
        ver = "unknown"
    collector = Collector(short_metrics_names=False)
    print(json.dumps({"ready": True, "version": ver}), flush=True)
    for line in sys.stdin:
        try:
            reps = int(json.loads(line)["reps"])
        except (ValueError, KeyError, TypeError) as exc:
            print(json.dumps({"error": f"bad request {line.strip()!r}: {exc}"}), flush=True)
            continue
        times, cpu, size = [], [], 0
        for _ in range(max(1, min(reps, 1000))):
            c0 = time.process_time()
            t0 = time.perf_counter()
            payload = collector.collect_metrics().to_json_string()
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
            size = len(payload.encode() if isinstance(payload, str) else payload)
        print(json.dumps({"times": times, "cpu": cpu, "bytes": size,
                          "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

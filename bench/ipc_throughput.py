"""IPC publish throughput and round-trip latency of `ggdefender local`'s server with the real awsiotsdk client.

The server runs on this process's event loop; clients run in child processes (the unmodified
GreengrassCoreIPCClientV2), each with several threads sharing one connection, calling publish_to_iot_core
(and publish_to_topic with --op local) synchronously. Prints ops/s and latency percentiles.

    .venv/bin/python bench/ipc_throughput.py [--processes 2] [--threads 8] [--ops 8000] [--op iot|local]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time

from ggdefender.local.nucleus.core import Core
from ggdefender.local.nucleus.server import IpcServer

CLIENT = r'''
import json, sys, threading, time
from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
from awsiot.greengrasscoreipc.model import QOS, PublishMessage, JsonMessage
threads, ops, op = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
client = GreengrassCoreIPCClientV2()
payload = b'{"metric": 42, "pad": "' + b"x" * 200 + b'"}'
msg = PublishMessage(json_message=JsonMessage(message={"metric": 42}))
lat = []
lock = threading.Lock()
start_evt = threading.Event()
def work(n):
    mine = []
    start_evt.wait()
    for i in range(n):
        t = time.perf_counter()
        if op == "iot":
            client.publish_to_iot_core(topic_name="bench/metrics", qos=QOS.AT_LEAST_ONCE, payload=payload)
        else:
            client.publish_to_topic(topic="bench/local", publish_message=msg)
        mine.append(time.perf_counter() - t)
    with lock:
        lat.extend(mine)
ts = [threading.Thread(target=work, args=(ops // threads,)) for _ in range(threads)]
for t in ts: t.start()
print("ready", flush=True)
sys.stdin.readline()
t0 = time.perf_counter(); start_evt.set()
for t in ts: t.join()
elapsed = time.perf_counter() - t0
print(json.dumps({"ops": len(lat), "elapsed": elapsed, "lat": lat}), flush=True)
client.close()
'''


def pct(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=8, help="threads per client process")
    ap.add_argument("--ops", type=int, default=8000, help="operations per client process")
    ap.add_argument("--op", choices=("iot", "local"), default="iot")
    args = ap.parse_args()

    core = Core(thing_name="bench")
    received = [0]
    core.subscribe_iot("bench/#", lambda topic, payload, source: received.__setitem__(0, received[0] + 1))
    access = {"aws.greengrass.ipc.mqttproxy": {"p": {"operations": ["*"], "resources": ["bench/*"]}},
              "aws.greengrass.ipc.pubsub": {"p": {"operations": ["*"], "resources": ["bench/*"]}}}
    with tempfile.TemporaryDirectory() as tmp:
        server = IpcServer(core, os.path.join(tmp, "ipc.socket"))
        await server.start()
        try:
            procs = []
            for i in range(args.processes):
                token = core.register_component(f"bench.Client{i}", "1.0.0", {"accessControl": access})
                env = dict(os.environ, SVCUID=token, AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT=server.socket_path)
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CLIENT, str(args.threads), str(args.ops), args.op, env=env,
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=64 * 1024 * 1024))
            for p in procs:
                line = await asyncio.wait_for(p.stdout.readline(), 60)
                assert line.strip() == b"ready", line
            t0 = time.perf_counter()
            cpu0 = time.process_time()
            for p in procs:
                p.stdin.write(b"go\n")
                await p.stdin.drain()
            results = []
            for p in procs:
                out = await asyncio.wait_for(p.stdout.readline(), 600)
                results.append(json.loads(out))
                await p.wait()
            wall = time.perf_counter() - t0
            server_cpu = time.process_time() - cpu0
        finally:
            await server.stop()
    total = sum(r["ops"] for r in results)
    lat = sorted(x for r in results for x in r["lat"])
    print(f"operation            : {'PublishToIoTCore' if args.op == 'iot' else 'PublishToTopic'}")
    print(f"clients              : {args.processes} processes x {args.threads} threads (one connection each)")
    print(f"operations           : {total}")
    print(f"wall time            : {wall:.3f} s")
    print(f"throughput           : {total / wall:,.0f} ops/s (target >= 5,000)")
    print(f"server CPU           : {server_cpu:.3f} s ({1e6 * server_cpu / max(total, 1):.0f} us per operation, "
          f"{total / max(server_cpu, 1e-9):,.0f} ops per server CPU-second)")
    if args.op == "iot":
        print(f"cloud-side received  : {received[0]}")
    print("round-trip latency   : p50 {:.3f} ms  p90 {:.3f} ms  p99 {:.3f} ms  max {:.3f} ms  mean {:.3f} ms".format(
        *(1000 * pct(lat, p) for p in (50, 90, 99, 100)), 1000 * statistics.fmean(lat)))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

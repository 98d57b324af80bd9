#!/usr/bin/env python3
"""bench/cluster/pusher.py: OTLP/JSON pushes to the cluster's nodes during
bench/cluster_chaos.sh, each point with a value no other point has, so that
bench/cluster/reference.py --pushes can find every point in the Redis log.

  pusher.py --ports P1,P2,P3 --out FILE [--threads 2] [--rate 4] [--points 4] [--seed S]

Each thread sends requests one after the other, about RATE a second in all, each to a
node picked at random (pushing to a follower is answered 503: only the leader takes
points). Request r holds POINTS points, point j of series slot=j with the value
r * POINTS + j: a gauge chaos.push.gauge when r is even, a cumulative monotonic sum
chaos.push.count when r is odd (values only grow, as a counter's should), timestamped
now. One JSON line per request in FILE: {"id", "port", "status" (the HTTP status, or
"error: ..." when no answer came within 10 s), "values"}. Runs until SIGTERM/SIGINT.
"""
import argparse
import http.client
import json
import random
import signal
import threading
import time


def request_body(r, points):
    pts = []
    for j in range(points):
        pts.append({"timeUnixNano": str(time.time_ns()), "asInt": str(r * points + j),
                    "attributes": [{"key": "slot", "value": {"stringValue": str(j)}}]})
    if r % 2 == 0:
        metric = {"name": "chaos.push.gauge", "gauge": {"dataPoints": pts}}
    else:
        metric = {"name": "chaos.push.count",
                  "sum": {"aggregationTemporality": 2, "isMonotonic": True, "dataPoints": pts}}
    return json.dumps({"resourceMetrics": [{"scopeMetrics": [{"metrics": [metric]}]}]}).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ports", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rate", type=float, default=4)
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    lock = threading.Lock()
    state = {"next": 1}
    out = open(a.out, "w")

    def worker(n):
        rnd = random.Random(a.seed * 100 + n)
        period = a.threads / a.rate
        while not stop.is_set():
            with lock:
                r = state["next"]
                state["next"] += 1
            port = rnd.choice(ports)
            start = time.monotonic()
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                conn.request("POST", "/v1/metrics", request_body(r, a.points),
                             {"Content-Type": "application/json"})
                status = conn.getresponse().status
                conn.close()
            except Exception as e:  # noqa: BLE001 - any failure is recorded as such
                status = f"error: {type(e).__name__}"
            values = [r * a.points + j for j in range(a.points)]
            with lock:
                out.write(json.dumps({"id": r, "port": port, "status": status, "values": values}) + "\n")
                out.flush()
            stop.wait(max(0.0, period - (time.monotonic() - start)))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(a.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.close()


if __name__ == "__main__":
    main()

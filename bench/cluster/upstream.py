#!/usr/bin/env python3
# bench/cluster/upstream.py: the upstream of the local cluster (scripts/cluster.sh).
# Every GET /telemetry is one fetch: it raises a counter c (1, 2, ...) and answers native
# JSON samples whose values are a known function of c (value() below), without
# timestamps, so each sample takes the tick's clock. The first sample is the counter
# itself (chaos.counter = c), so a log entry says which fetch it holds, and
# bench/cluster/reference.py can check every other value against value(k, c) and compute
# the exact window aggregates from the log alone. GET /peek answers c without counting.
import argparse
import json
from http.server import BaseHTTPRequestHandler, HTTPServer


def value(k, c):
    """Series k's value at fetch c: not monotonic, signed, fractional (inexact sums)."""
    return ((c * (2 * k + 1) * 7919) % 1009 - 504) / 8 + k / 10


def body(series, c):
    samples = [{"metric": "chaos.counter", "value": c}]
    for k in range(1, series):
        samples.append({"metric": "chaos.value", "labels": {"k": "%03d" % k}, "value": value(k, c)})
    return json.dumps({"samples": samples}).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--series", type=int, default=20)
    args = ap.parse_args()
    state = {"c": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/telemetry":
                state["c"] += 1
                out = body(args.series, state["c"])
            elif self.path == "/peek":
                out = str(state["c"]).encode()
            else:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)

        def log_message(self, *a):
            pass

    HTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""bench/peers/dump_bodies.py URL OUTDIR [--keys-only]: fetch every series body from a running telemetryd.

Writes, for the wrk peers:
  OUTDIR/keys.txt            one URL path per line: /v1/series/<percent-encoded key>
  OUTDIR/www/v1/series/<key> the body of each series as a static file (nginx decodes the
                             URL path before mapping it to a file, so the file name is the key)
  OUTDIR/bodies.json         {decoded URL path: body} for the Python dict peer
Uses one keep-alive connection: GET /v1/metrics, /v1/metrics/{name}, /v1/series/{key}.
"""
import http.client
import json
import os
import sys
import urllib.parse


def main():
    url, out = sys.argv[1], sys.argv[2]
    keys_only = "--keys-only" in sys.argv[3:]
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)

    def get(path):
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        if r.status != 200:
            raise SystemExit(f"GET {path}: {r.status} {body[:200]!r}")
        return body

    metrics = [m["metric"] for m in json.loads(get("/v1/metrics"))["metrics"]]
    keys = []
    for m in metrics:
        keys += json.loads(get("/v1/metrics/" + urllib.parse.quote(m, safe="")))["series"]
    if keys_only:  # keys.txt only (bench/soak.sh)
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "keys.txt"), "w") as kf:
            kf.writelines("/v1/series/" + urllib.parse.quote(k, safe="") + "\n" for k in keys)
        print(f"{len(keys)} keys from {len(metrics)} metrics")
        return
    www = os.path.join(out, "www", "v1", "series")
    os.makedirs(www, exist_ok=True)
    bodies = {}
    with open(os.path.join(out, "keys.txt"), "w") as kf:
        for k in keys:
            if "/" in k or k in (".", ".."):
                continue  # cannot be a file name; not produced by the synthetic source
            path = "/v1/series/" + urllib.parse.quote(k, safe="")
            body = get(path)
            with open(os.path.join(www, k), "wb") as f:
                f.write(body)
            bodies["/v1/series/" + k] = body.decode()
            kf.write(path + "\n")
    tmp = os.path.join(out, "bodies.json.tmp")
    with open(tmp, "w") as f:
        json.dump(bodies, f)
    os.replace(tmp, os.path.join(out, "bodies.json"))
    sizes = [len(b) for b in bodies.values()]
    print(f"dumped {len(bodies)} series from {len(metrics)} metrics, body bytes mean {sum(sizes)/len(sizes):.0f}")


if __name__ == "__main__":
    main()

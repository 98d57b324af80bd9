#!/usr/bin/env python3
"""bench/cluster/observe.py: what bench/cluster_chaos.sh records while its faults run,
for bench/cluster/reference.py to check at the end.

  observe.py --decoder cluster_log_entries --redis-port P --cluster-name NAME
             --series N --ports P1,P2,P3 --answers FILE --log FILE [--period 0.5]

- Every PERIOD seconds, GET /v1/series/KEY from every node for three of the upstream's
  series and the pushed series chaos.push.gauge{slot="0"}, with a 2 s timeout (a node
  that is paused or down is skipped): one JSON line per answer in ANSWERS, {"port",
  "key", "status", "generation", "body"}, so that the answers taken during the faults,
  not only those at the end, are compared across nodes and against the log.
- Every 2 s, reads the whole Redis log (cluster_log_entries): checkpoints trim it, so
  the entries are kept here, by seq, in LOG (rewritten each time, one decoder line per
  entry). A seq read again with other content is a broken history: printed as
  "CONFLICT seq ..." to stdout, and both lines kept in LOG.CONFLICTS.
Runs until SIGTERM/SIGINT.
"""
import argparse
import http.client
import json
import signal
import threading

from cluster_log import add_cluster_args, decode_log, get_series, merge_lines


def main():
    ap = argparse.ArgumentParser()
    add_cluster_args(ap)
    ap.add_argument("--ports", required=True)
    ap.add_argument("--answers", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--period", type=float, default=0.5)
    a = ap.parse_args()
    ports = [int(p) for p in a.ports.split(",")]
    keys = ["chaos.counter", 'chaos.value{k="%03d"}' % 1, 'chaos.value{k="%03d"}' % (a.series - 1),
            'chaos.push.gauge{slot="0"}']
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def sample():
        with open(a.answers, "w") as out:
            while not stop.is_set():
                for port in ports:
                    try:
                        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                        for key in keys:
                            status, gen, body = get_series(conn, key)
                            out.write(json.dumps({"port": port, "key": key, "status": status,
                                                  "generation": gen, "body": body.decode()}) + "\n")
                        conn.close()
                    except Exception:  # noqa: BLE001 - paused, down or restarting: skipped
                        pass
                out.flush()
                stop.wait(a.period)

    entries, conflicts = {}, []

    def read_log():
        lines = decode_log(a.decoder, a.redis_port, a.cluster_name)
        if lines is None:
            return
        for seq, old, new in merge_lines(entries, lines):
            print(f"CONFLICT seq {seq}", flush=True)
            conflicts.append((old, new))
        with open(a.log, "w") as f:
            for seq in sorted(entries):
                f.write(entries[seq] + "\n")
        with open(a.log + ".CONFLICTS", "w") as f:
            for old, new in conflicts:
                f.write(old + "\n" + new + "\n\n")

    t = threading.Thread(target=sample)
    t.start()
    while not stop.is_set():
        read_log()
        stop.wait(2)
    read_log()
    t.join()


if __name__ == "__main__":
    main()

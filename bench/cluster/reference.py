#!/usr/bin/env python3
"""bench/cluster/reference.py: checks what each cluster node serves against an exact
reference computed from the Redis log (bench/cluster_chaos.sh, at the end of the run).

  reference.py --decoder cluster_log_entries --redis-port P --cluster-name NAME
               --series N --source URL [--rounds 3] [--pause 0]
               [--log-record FILE] [--answers FILE] [--pushes FILE] NODE_PORT...

1. Fetches /v1/series/KEY of every series of bench/cluster/upstream.py from every node,
   ROUNDS times PAUSE seconds apart, with the X-Snapshot-Generation of each answer.
2. Reads the log (cluster_log_entries, after the fetches: the log only grows at its end)
   and checks it: seqs increase; in every entry the upstream's group holds the SERIES
   samples of one fetch c (the first is c itself, the others upstream.value(k, c)); c
   increases from entry to entry (no fetch committed twice or out of order); the entries'
   tick times increase (a leader whose clock is behind goes on after the last one).
3. For each answer at generation G, computes the window the way docs/ingest.md defines
   it, from the raw samples of the entries up to G, not through any aggregator: a
   sample not newer than its series' last is dropped; samples fall in interval-aligned
   buckets; a bucket is in the window while its newest sample is at least
   clock(G) - window; count, sum (each bucket's in sample order, then the buckets' in
   order), min, max, first, last must equal the node's exactly. The log must reach back
   past the window of G without a gap in seq, or the answer cannot be checked (a miss).
4. Answers of the same series at the same generation must be the same bytes, whichever
   node gave them and whenever.
With bench/cluster/observe.py's files: the log is the entries it kept during the run
(checkpoints trim the log) plus the live one, and a seq it read with two contents is a
FAIL; the answers it took during the run are checked as in 3 (those the log cannot check
any more, or not 200 while a node was paused or cut off, are counted) and in 4. With
bench/cluster/pusher.py's file: every point of a request answered 200 must be in the
log's otlp:// groups exactly once, no point twice, none that no request held; points of
requests answered otherwise (503, no answer) may be there or not, and are counted.
Prints PASS/FAIL lines; exits 1 on any FAIL.
"""
import argparse
import http.client
import json
import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_log import add_cluster_args, decode_log, get_series, merge_lines, seq_of  # noqa: E402
from upstream import value  # noqa: E402


def series_keys(n):
    keys = ["chaos.counter"]
    keys += ['chaos.value{k="%03d"}' % k for k in range(1, n)]
    return keys


def fetch_all(ports, keys, rounds, pause):
    """[(port, key, status, generation, body)]"""
    out = []
    for r in range(rounds):
        if r:
            time.sleep(pause)
        for port in ports:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            for key in keys:
                status, gen, body = get_series(conn, key)
                out.append((port, key, status, gen, body))
            conn.close()
    return out


def log_lines(decoder, port, name, record):
    """The decoder's lines by seq: the live log, plus the entries bench/cluster/observe.py
    kept before checkpoints trimmed them (RECORD); a seq with two different lines is a
    conflict: ({seq: line}, [seq])."""
    live = decode_log(decoder, port, name, check=True)
    lines, conflicts = {}, []
    if record:
        with open(record) as f:
            for line in f.read().splitlines():
                lines[seq_of(line)] = line
        try:
            with open(record + ".CONFLICTS") as f:
                conflicts += [seq_of(x) for x in f.read().split("\n\n") if x.strip()]
        except FileNotFoundError:
            pass
    for seq, _, line in merge_lines(lines, live):
        conflicts.append(seq)
        lines[seq] = line  # the live log's line stands
    return lines, conflicts


def read_log(lines, source):
    """[(seq, clock_ns, interval_ns, window_ns, [(ts, value)] or None)] and the values
    of the pushed samples ("otlp://" groups) by seq: {seq: [value]}"""
    entries, pushed = [], {}
    for seq in sorted(lines):
        f = lines[seq].split("\t")
        clock, interval, window = int(f[2]), int(f[3]), int(f[4])
        samples = None
        for i in range(5, len(f) - 1, 2):
            parsed = [(int(ts), float.fromhex(v)) for ts, v in (s.split(":") for s in f[i + 1].split())]
            if f[i] == source:
                samples = parsed
            elif f[i].startswith("otlp://"):
                pushed.setdefault(seq, []).extend(v for _, v in parsed)
        entries.append((seq, clock, interval * 10**6, window * 10**6, samples))
    return entries, pushed


def check_pushes(pushed, requests):
    """Every point of a request answered 200 is in the log exactly once; no point is in
    it twice; nothing is in it that was not pushed. Returns (problems, figures)."""
    where = {}
    for seq, values in pushed.items():
        for v in values:
            where.setdefault(v, []).append(seq)
    problems, acked, acked_points, other_in_log, other_points = [], 0, 0, 0, 0
    known = set()
    for q in requests:
        known.update(float(v) for v in q["values"])
        if q["status"] == 200:
            acked += 1
            for v in q["values"]:
                acked_points += 1
                if len(where.get(float(v), [])) != 1:
                    problems.append(f"request {q['id']} (node :{q['port']}, 200): point {v} is in the log "
                                    f"{len(where.get(float(v), []))} times (seqs {where.get(float(v), [])})")
        else:
            for v in q["values"]:
                other_points += 1
                other_in_log += len(where.get(float(v), [])) > 0
    for v, seqs in where.items():
        if len(seqs) > 1:
            problems.append(f"point {v} is in the log {len(seqs)} times (seqs {seqs})")
        if v not in known:
            problems.append(f"point {v} (seqs {seqs}) is in the log but no request of the pusher held it")
    return problems, (len(requests), acked, acked_points, other_points, other_in_log)


def check_log(entries, series):
    problems = []
    last_seq, last_c, last_clock = 0, 0, 0
    for seq, clock, _, _, samples in entries:
        if seq <= last_seq:
            problems.append(f"seq {seq} after {last_seq}")
        if clock <= last_clock:  # tick time never goes back, whoever leads and whatever its clock
            problems.append(f"seq {seq}: tick time {clock} not after the previous entry's {last_clock}")
        last_seq, last_clock = seq, clock
        if samples is None:
            continue  # the upstream did not answer that tick
        if len(samples) != series:
            problems.append(f"seq {seq}: {len(samples)} samples, not {series}")
            continue
        c = samples[0][1]
        if c != int(c) or c <= last_c:
            problems.append(f"seq {seq}: fetch {c} after fetch {last_c}")
        last_c = max(last_c, c)
        for k in range(1, series):
            if samples[k][1] != value(k, int(c)):
                problems.append(f"seq {seq}: series {k} is {samples[k][1]!r}, fetch {int(c)} gave {value(k, int(c))!r}")
    return problems


def reference(entries, generation, k):
    """The window of series k at generation: dict of aggregates, or a reason it cannot
    be computed."""
    upto = [e for e in entries if e[0] <= generation]
    if not upto or upto[-1][0] != generation:
        return f"entry {generation} is not in the log"
    clock, interval, window = upto[-1][1], upto[-1][2], upto[-1][3]
    cutoff = clock - window
    # Entries old enough that no sample of theirs is in the window: the log must reach
    # one of them (or its beginning, seq 1), and hold every seq after it.
    start = None
    for i in range(len(upto) - 1, -1, -1):
        if upto[i][1] < cutoff - interval or upto[i][0] == 1:
            start = i
            break
    if start is None:
        return f"the log starts at seq {upto[0][0]}, after the window of {generation} began"
    for a, b in zip(upto[start:], upto[start + 1:]):
        if b[0] != a[0] + 1:
            return f"the log lacks seq {a[0] + 1}..{b[0] - 1}, inside the window of {generation}"
    buckets = []  # [slot, first_ts, last_ts, count, sum, min, max, first, last]
    last_ts = None
    for seq, _, _, _, samples in upto[start:]:
        if samples is None:
            continue
        ts, v = samples[k]
        if last_ts is not None and ts <= last_ts:
            continue  # a duplicate
        last_ts = ts
        slot = ts // interval
        if not buckets or slot != buckets[-1][0]:
            buckets.append([slot, ts, ts, 0, 0.0, v, v, v, v])
        b = buckets[-1]
        b[2] = ts
        b[3] += 1
        b[4] += v
        b[5] = min(b[5], v)
        b[6] = max(b[6], v)
        b[8] = v
    kept = [b for b in buckets if b[2] >= cutoff]
    if not kept:
        return None  # the series has no sample in the window
    total = 0.0
    for b in kept:
        total += b[4]
    return {"count": sum(b[3] for b in kept), "sum": total, "min": min(b[5] for b in kept),
            "max": max(b[6] for b in kept), "first": kept[0][7], "last": kept[-1][8],
            "last_ts": kept[-1][2] / 1e9}


def main():
    ap = argparse.ArgumentParser()
    add_cluster_args(ap)
    ap.add_argument("--source", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pause", type=float, default=0)
    ap.add_argument("--log-record", help="the log as bench/cluster/observe.py kept it during the run")
    ap.add_argument("--answers", help="answers bench/cluster/observe.py took during the run")
    ap.add_argument("--pushes", help="the requests of bench/cluster/pusher.py and their answers")
    ap.add_argument("ports", type=int, nargs="+")
    a = ap.parse_args()
    keys = series_keys(a.series)
    answers = [(port, key, status, gen, body, False) for port, key, status, gen, body in
               fetch_all(a.ports, keys, a.rounds, a.pause)]
    during = 0
    if a.answers:
        with open(a.answers) as f:
            for line in f:
                try:
                    x = json.loads(line)
                except ValueError:
                    continue  # the last line, cut by the observer's end
                answers.append((x["port"], x["key"], x["status"], x["generation"], x["body"].encode(), True))
                during += 1
    lines, conflicts = log_lines(a.decoder, a.redis_port, a.cluster_name, a.log_record)
    entries, pushed = read_log(lines, a.source)
    ok = True

    def verdict(good, what, details=()):
        nonlocal ok
        print(("PASS  " if good else "FAIL  ") + what)
        for d in list(details)[:10]:
            print("      " + d)
        ok = ok and good

    problems = check_log(entries, a.series)
    problems += [f"seq {seq} read twice with different content" for seq in conflicts]
    seqs = [e[0] for e in entries]
    verdict(not problems and entries,
            f"log: {len(entries)} entries (seq {seqs[0] if seqs else '-'}..{seqs[-1] if seqs else '-'}), "
            f"each one fetch of the upstream, in fetch order, every value as the upstream served it, tick times increasing, "
            f"no seq read twice with different content", problems)

    mismatches, unchecked, checked, late_unchecked, not_ok = [], [], 0, 0, 0
    gens = set()
    for port, key, status, gen, body, late in answers:
        if key not in keys:
            continue  # a pushed series: compared by bytes only
        k = keys.index(key)
        if status != 200:
            if late:
                not_ok += 1  # during the faults: a node paused, cut off or restarting
            else:
                mismatches.append(f"node :{port} {key}: HTTP {status} at generation {gen}")
            continue
        gens.add(gen)
        want = reference(entries, gen, k)
        if isinstance(want, str):
            if late:
                late_unchecked += 1
            else:
                unchecked.append(f"node :{port} {key} at {gen}: {want}")
            continue
        got = json.loads(body)
        if want is None:
            mismatches.append(f"node :{port} {key} at {gen}: served, but no sample of it is in the window")
            continue
        checked += 1
        for field in ("count", "sum", "min", "max", "first", "last"):
            if got.get(field) != want[field]:
                mismatches.append(f"node :{port} {key} at {gen}{' (during the run)' if late else ''}: "
                                  f"{field} {got.get(field)!r}, reference {want[field]!r}")
        if not math.isclose(got.get("last_ts") or 0, want["last_ts"], abs_tol=1e-6):
            mismatches.append(f"node :{port} {key} at {gen}: last_ts {got.get('last_ts')!r}, reference {want['last_ts']!r}")
    verdict(not mismatches and checked > 0,
            f"aggregates: {checked} answers ({during} taken during the run, of which {not_ok} not 200 and "
            f"{late_unchecked} not checkable against the log; generations {min(gens) if gens else '-'}.."
            f"{max(gens) if gens else '-'}) equal the reference from the log in count, sum, min, max, first, last",
            mismatches)
    verdict(not unchecked, f"aggregates: every answer at the end checkable against the log ({len(unchecked)} not)",
            unchecked)

    by = {}
    for port, key, status, gen, body, late in answers:
        if status == 200:
            by.setdefault((key, gen), {}).setdefault(body, set()).add(port)
    shared = [v for v in by.values() if len(set().union(*v.values())) > 1]
    differ = [f"{key} at {gen}: {len(v)} different bodies: " + "; ".join(
                  f"nodes {sorted(p)}: {b[:160]!r}" for b, p in v.items())
              for (key, gen), v in by.items() if len(v) > 1]
    verdict(not differ and shared, f"bytes: {len(by)} series-generation pairs answered ({during} answers during "
            f"the run), {len(shared)} by several nodes; one body for each pair", differ)

    if a.pushes:
        with open(a.pushes) as f:
            requests = [json.loads(line) for line in f if line.strip()]
        problems, (n, acked, acked_points, other_points, other_in_log) = check_pushes(pushed, requests)
        verdict(not problems and acked > 0,
                f"pushes: {n} requests, {acked} answered 200: each of their {acked_points} points in the log "
                f"exactly once; no point twice; of the {other_points} points of requests not answered 200, "
                f"{other_in_log} are in the log (allowed: a 503 or lost answer may follow a commit)", problems)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

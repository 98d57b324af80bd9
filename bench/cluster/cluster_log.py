"""bench/cluster/cluster_log.py: what bench/cluster/observe.py and bench/cluster/reference.py
both do: take the cluster's settings from the command line, read the Redis log through the
decoder (cluster_log_entries: one line per entry, its seq first), merge those lines by seq,
and GET a series from a node."""
import subprocess
import urllib.parse


def add_cluster_args(ap):
    """The arguments both scripts take: the decoder, where the log is, the series count."""
    ap.add_argument("--decoder", required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--cluster-name", required=True)
    ap.add_argument("--series", type=int, required=True)


def decode_log(decoder, port, name, check=False):
    """The decoder's lines for the live log, or None if it failed (with check: it raises)."""
    r = subprocess.run([decoder, "127.0.0.1", str(port), name], check=check,
                       capture_output=True, text=True)
    return r.stdout.splitlines() if r.returncode == 0 else None


def seq_of(line):
    return int(line.split("\t", 1)[0])


def merge_lines(lines, new):
    """Adds the decoder lines `new` to LINES ({seq: line}). A seq already there with another
    line is a broken history: left as it was and returned, [(seq, old line, new line)]."""
    conflicts = []
    for line in new:
        seq = seq_of(line)
        if seq in lines and lines[seq] != line:
            conflicts.append((seq, lines[seq], line))
            continue
        lines[seq] = line
    return conflicts


def get_series(conn, key):
    """GET /v1/series/KEY on CONN: (status, snapshot generation, body bytes)."""
    conn.request("GET", "/v1/series/" + urllib.parse.quote(key, safe=""))
    r = conn.getresponse()
    body = r.read()
    return r.status, int(r.getheader("X-Snapshot-Generation") or 0), body

#!/usr/bin/env python3
"""tests/ui/browser_test.py: the web view (/ui) end to end, in a real headless Chromium.

Starts the built telemetryd on a free 127.0.0.1 port with the synthetic source and a
file:// source, drives Debian's Chromium through chromedriver's WebDriver HTTP API
(stdlib urllib only) and checks what a user would: the metric list renders, search
narrows it (by name and by label), sorting works from the keyboard, a metric's table
shows the numbers GET /v1/query gives, the table follows the next publish, "more" pages
through the series, a source made to fail shows as failing with its error and its series
as stale, and a stopped writer's old snapshot shows as stale. Saves screenshots (wide and
narrow) into --out.

With --cluster it starts a redis-server and two cluster nodes instead and checks that the
view on the follower shows the cluster: this node's role, term, leader and sync state,
and both members.

Exit status: 0 passed, 1 failed, 77 skipped (no Chromium or chromedriver, or they cannot
start, or no redis-server with --cluster: said on stdout; ctest reports the test as
skipped, never as passed).

    browser_test.py --telemetryd build/server/telemetryd --out build/tests/ui [--cluster]
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

SKIP = 77
CHROMIUM = "/usr/bin/chromium"
ELEMENT = "element-6066-11e4-a52e-4f735466cecf"  # the W3C element reference key
METRIC = "cpu.usage_percent"                       # a metric of the synthetic source
HOSTS = 150                                        # its series: more than one page (100)
ENTER, ESCAPE, CONTROL, RELEASE, BACKSPACE = "\ue007", "\ue00c", "\ue009", "\ue000", "\ue003"


class Skip(Exception):
    pass


class WebDriverError(Exception):
    pass


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    """(status, headers, body bytes); never raises for an HTTP status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def wait_for(what, fn, timeout=20.0, every=0.1):
    """Polls fn() until it returns something true; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = fn()
            if value:
                return value
            last = value
        except (WebDriverError, OSError, KeyError, ValueError) as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")
        time.sleep(every)


class WebDriver:
    """The few WebDriver commands the test needs, over plain HTTP."""

    def __init__(self, base):
        self.base = base
        self.session = None

    def call(self, method, path, body=None, timeout=30):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            try:
                value = json.load(e)["value"]
                message = f"{value.get('error')}: {value.get('message', '').splitlines()[0]}"
            except (ValueError, KeyError, IndexError):
                message = f"HTTP {e.code}"
            raise WebDriverError(f"{method} {path}: {message}") from None

    def start(self, width, height):
        caps = {"browserName": "chrome", "goog:loggingPrefs": {"browser": "ALL"},
                "goog:chromeOptions": {"binary": CHROMIUM, "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--hide-scrollbars", "--no-first-run", f"--window-size={width},{height}"]}}
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": caps}}, timeout=60)["sessionId"]

    def stop(self):
        if self.session:
            try:
                self.call("DELETE", f"/session/{self.session}", timeout=10)
            except (WebDriverError, OSError):
                pass
            self.session = None

    def s(self, method, path, body=None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def go(self, url):
        self.s("POST", "/url", {"url": url})

    def find(self, css):
        return self.s("POST", "/element", {"using": "css selector", "value": css})[ELEMENT]

    def find_all(self, css):
        return [e[ELEMENT] for e in self.s("POST", "/elements", {"using": "css selector", "value": css})]

    def text(self, element):
        return self.s("GET", f"/element/{element}/text")

    def attribute(self, element, name):
        return self.s("GET", f"/element/{element}/attribute/{name}")

    def click(self, element):
        self.s("POST", f"/element/{element}/click", {})

    def keys(self, element, text):
        self.s("POST", f"/element/{element}/value", {"text": text})

    def script(self, body, *args):
        return self.s("POST", "/execute/sync", {"script": body, "args": list(args)})

    def window(self, width, height):
        self.s("POST", "/window/rect", {"width": width, "height": height})

    def screenshot(self, path):
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.s("GET", "/screenshot")))

    def console(self):
        """The browser console since the last call ([] when the driver cannot tell)."""
        try:
            return self.s("POST", "/se/log", {"type": "browser"})
        except WebDriverError:
            return []


# Reads a table's rows at one instant (a refresh may replace cells between two WebDriver
# calls): per row its data-key, class and the text of each cell.
READ_TABLE = """
const rows = document.querySelectorAll(arguments[0] + ' tbody tr');
return Array.from(rows, (tr) => ({key: tr.dataset.key || tr.dataset.url || '', cls: tr.className,
  cells: Array.from(tr.cells, (c) => c.innerText.trim())}));
"""


class Service:
    """A telemetryd process tree on 127.0.0.1 with a synthetic and a file:// source."""

    def __init__(self, binary, tmp, name="", extra=()):
        self.tmp = tmp
        self.port = free_port()
        self.source = os.path.join(tmp, f"app{name}.json")
        self.write_source(21.5)
        self.log = os.path.join(tmp, f"telemetryd{name}.log")
        self.proc = subprocess.Popen([
            binary, "--listen", f"127.0.0.1:{self.port}", "--workers", "3",
            "--source", f"synthetic://?hosts={HOSTS}&metrics=5", "--source", f"file://{self.source}",
            "--interval", "1s", "--healthz-max-age", "3s", "--shm-name", f"tdui{os.getpid()}{name}",
            "--admin-socket", os.path.join(tmp, f"admin{name}.sock"), "--log-file", self.log, *extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{self.port}"

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"telemetryd exited with status {self.proc.returncode}")
            return http_get(self.url + "/healthz")[0] == 200
        wait_for("telemetryd's /healthz to answer 200", ready, timeout=30)

    def write_source(self, value, text=None):
        body = text if text is not None else json.dumps({"samples": [
            {"metric": "ui_test.temp", "labels": {"host": "web-1", "room": "a"}, "value": value},
            {"metric": "ui_test.temp", "labels": {"host": "web-2", "room": "b"}, "value": value + 1}]})
        tmp = self.source + ".new"
        with open(tmp, "w") as f:
            f.write(body)
        os.replace(tmp, self.source)  # the writer never reads half a file

    def json(self, path):
        status, headers, body = http_get(self.url + path)
        if status != 200:
            raise AssertionError(f"GET {path}: {status} {body[:200]!r}")
        return json.loads(body), int(headers.get("X-Snapshot-Generation", "0"))

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_driver(tmp):
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not os.path.exists(CHROMIUM) or not os.access(driver, os.X_OK):
        raise Skip(f"Chromium ({CHROMIUM}) or chromedriver not installed: apt-get install chromium chromium-driver")
    port = free_port()
    log = open(os.path.join(tmp, "chromedriver.log"), "w")
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=log, stderr=subprocess.STDOUT)
    wd = WebDriver(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 20
    while True:
        try:
            if wd.call("GET", "/status", timeout=2).get("ready"):
                break
        except (WebDriverError, OSError):
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise Skip(f"chromedriver did not start (exit {proc.poll()}); see {log.name}")
        time.sleep(0.1)
    try:
        wd.start(1400, 1300)
    except (WebDriverError, OSError) as e:
        proc.kill()
        raise Skip(f"Chromium did not start under chromedriver: {e}")
    return proc, wd


def rel_close(text, value):
    if value is None:
        return text == "–"
    shown = float(text.replace(",", ""))
    return abs(shown - value) <= 1e-4 * max(1e-4, abs(value))  # five significant digits


def check(wd, svc, out):
    metrics, _ = svc.json("/v1/metrics")
    names = sorted(m["metric"] for m in metrics["metrics"])

    wd.go(svc.url + "/ui")
    page_names = lambda: sorted(r["key"] for r in wd.script(READ_TABLE, "#metrics"))
    wait_for("the metric list to match GET /v1/metrics", lambda: page_names() == names)
    print(f"metric list: {len(names)} metrics, as GET /v1/metrics")
    wait_for("the service to show OK", lambda: wd.text(wd.find("#health")) == "OK")

    # Search: a word narrows by name, a label=value term by the series' labels.
    search = wd.find("#metric-search")
    wd.keys(search, "usage")
    wait_for("the search 'usage'", lambda: page_names() == [n for n in names if "usage" in n])
    wd.keys(search, CONTROL + "a" + RELEASE + BACKSPACE + "host=web-1")
    wait_for("the label search 'host=web-1'", lambda: page_names() == ["ui_test.temp"])
    wd.keys(search, CONTROL + "a" + RELEASE + BACKSPACE + "room=b")
    wait_for("the label search 'room=b'", lambda: page_names() == ["ui_test.temp"])
    wd.keys(search, CONTROL + "a" + RELEASE + BACKSPACE)
    wait_for("the cleared search", lambda: page_names() == names)
    print("search: by name and by label narrows the list")

    # Sorting from the keyboard: Enter on a header's button.
    header = "#metrics thead th[data-sort=series_count]"
    wd.keys(wd.find(header + " button"), ENTER)
    wait_for("the series column sorted descending", lambda: wd.attribute(wd.find(header), "aria-sort") == "descending")
    counts = [int(r["cells"][1].replace(",", "")) for r in wd.script(READ_TABLE, "#metrics")]
    assert counts == sorted(counts, reverse=True), counts
    print("sort: keyboard-activated header sorts the list")

    # Open a metric from the keyboard and compare its table with GET /v1/query.
    wd.keys(wd.find(f'#metrics tbody tr[data-key="{METRIC}"] th button'), ENTER)
    wait_for("the metric's series table", lambda: len(wd.script(READ_TABLE, "#series")) == 100)
    fields = ["count", "last", "mean", "min", "max", "rate", "p50", "p90", "p99"]

    def same_as_api():
        gen_shown = int(wd.text(wd.find("#series-generation")))
        rows = {r["key"]: r for r in wd.script(READ_TABLE, "#series")}
        body, gen = svc.json(f"/v1/query?metric={urllib.parse.quote(METRIC)}&limit=100")
        if gen != gen_shown:
            return False  # a publish came between the two reads: read both again
        assert set(rows) == {s["key"] for s in body["series"]}, "the page's series are not the API's first page"
        for s in body["series"][:5]:
            cells = rows[s["key"]]["cells"]
            for i, f in enumerate(fields):
                assert rel_close(cells[i + 2], s[f]), f"{s['key']} {f}: page {cells[i + 2]!r}, API {s[f]!r}"
            assert cells[-1] == ("STALE" if s["stale"] else "no"), cells[-1]
        assert "next_cursor" in body, "the first page of the API has no next_cursor"
        assert wd.attribute(wd.find("#more"), "hidden") is None, "no 'Show more' although more series remain"
        return gen
    gen = wait_for("the page and GET /v1/query to show one generation", same_as_api)
    print(f"series table: generation {gen}, 5 rows x {len(fields)} numbers equal GET /v1/query")

    # The next publish shows without a reload: the generation changes, and values or the age.
    before = wd.script(READ_TABLE, "#series")
    age_before = wd.text(wd.find("#age"))

    def updated():
        shown = int(wd.text(wd.find("#series-generation")))
        header_gen = int(wd.text(wd.find("#generation")))
        if shown <= gen or header_gen <= gen:
            return False
        return wd.script(READ_TABLE, "#series") != before or wd.text(wd.find("#age")) != age_before
    wait_for("the table to follow the next generation", updated, timeout=15)
    print("refresh: generation and values changed without a reload")

    # Sparklines fill as generations pass; the larger chart opens and closes by keyboard.
    wait_for("a sparkline with a line", lambda: wd.find_all("#series tbody tr:first-child td.spark polyline"))
    first = wd.script(READ_TABLE, "#series")[0]["key"]
    wd.keys(wd.find("#series tbody tr:first-child th button"), ENTER)
    wait_for("the chart dialog", lambda: wd.script("return document.getElementById('chart').open"))
    assert wd.text(wd.find("#chart-title")) == first
    wait_for("the chart's line", lambda: wd.find_all("#chart-body svg polyline"))
    wd.screenshot(os.path.join(out, "ui-chart.png"))
    wd.keys(wd.find("#chart-close"), ESCAPE)
    wait_for("the chart dialog to close", lambda: not wd.script("return document.getElementById('chart').open"))
    print("chart: opens on Enter, closes on Escape")

    # "Show more" pages through the rest with next_cursor.
    wd.click(wd.find("#more"))
    wait_for(f"all {HOSTS} series after 'Show more'", lambda: len(wd.script(READ_TABLE, "#series")) == HOSTS)
    print(f"paging: 'Show more' loads the next page ({HOSTS} series)")

    # A source made to fail shows as failing, with its error text.
    svc.write_source(0, text="{this is not json")
    url = f"file://{svc.source}"

    def failing():
        rows = [r for r in wd.script(READ_TABLE, "#sources") if r["key"] == url]
        if not rows or "failing" not in rows[0]["cls"] or rows[0]["cells"][1] != "FAILING":
            return False
        status, _ = svc.json("/v1/status")
        api = next(x for x in status["sources"] if x["url"] == url)
        assert api["state"] == "failing" and api["last_error"], api
        return rows[0]["cells"][-1] == api["last_error"] and api["last_error"]
    error = wait_for("the file source to show as failing", failing)
    assert "failing" in wd.text(wd.find("#banner"))
    wait_for("the health badge to say DEGRADED", lambda: wd.text(wd.find("#health")) == "DEGRADED")
    print(f"failing source: shown as FAILING with '{error}'")
    wd.script("window.scrollTo(0, 0)")
    wd.screenshot(os.path.join(out, "ui.png"))

    # Its series get no more samples: after stale-after (3 intervals) they show as stale.
    wd.click(wd.find('#metrics tbody tr[data-key="ui_test.temp"] th button'))

    def stale():
        rows = wd.script(READ_TABLE, "#series")
        return len(rows) == 2 and all("stale" in r["cls"].split() and r["cells"][-1] == "STALE" for r in rows)
    wait_for("the broken source's series to show as stale", stale)
    wd.screenshot(os.path.join(out, "ui-stale.png"))
    print("stale series: marked STALE")

    # An old snapshot: the writer stopped, past healthz-max-age (3 s) the page says so.
    writer = svc.json("/v1/status")[0]["writer"]["pid"]
    os.kill(writer, signal.SIGSTOP)
    try:
        wait_for("the page to show the snapshot as stale",
                 lambda: wd.text(wd.find("#health")) == "STALE SNAPSHOT" and "old" in wd.text(wd.find("#banner")))
        wd.screenshot(os.path.join(out, "ui-stale-snapshot.png"))
    finally:
        os.kill(writer, signal.SIGCONT)
    wait_for("the page to see the writer publish again", lambda: wd.text(wd.find("#health")) == "DEGRADED")
    print("old snapshot: STALE SNAPSHOT while the writer is stopped, back when it publishes")

    # A narrow screen: nothing wider than the viewport (tables scroll inside their box).
    wd.window(390, 844)
    wait_for("the narrow layout", lambda: wd.script("return window.innerWidth") <= 420)
    width = wd.script("return [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, f"the page is {width[0]}px wide in a {width[1]}px window"
    wd.screenshot(os.path.join(out, "ui-narrow.png"))
    print(f"narrow screen: page fits {width[1]}px")

    errors = [e for e in wd.console() if e.get("level") == "SEVERE"]
    assert not errors, f"console errors (CSP violations show here): {errors}"


class Redis:
    """A redis-server on a free 127.0.0.1 port, no persistence, stopped by its pid."""

    def __init__(self, tmp):
        binary = shutil.which("redis-server")
        if not binary:
            raise Skip("redis-server not installed: apt-get install redis-server")
        self.port = free_port()
        self.proc = subprocess.Popen([binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", tmp],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def up():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as c:
                    c.sendall(b"PING\r\n")
                    return c.recv(16).startswith(b"+PONG")
            except OSError:
                return False
        wait_for("redis-server to answer", up, timeout=10)

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def check_cluster(wd, binary, tmp, out):
    """Two nodes over one Redis: the follower's view shows the cluster as it is."""
    redis = Redis(tmp)
    nodes = []
    try:
        for name in ("ui-a", "ui-b"):
            nodes.append(Service(binary, tmp, name, ["--cluster", f"redis://127.0.0.1:{redis.port}",
                                                     "--cluster-name", f"ui{os.getpid()}", "--node-id", name,
                                                     "--lease", "1s"]))
        status = lambda n: n.json("/v1/status")[0]["cluster"]
        wait_for("a leader", lambda: any(status(n)["role"] == "leader" for n in nodes))
        leader = next(n for n in nodes if status(n)["role"] == "leader")
        follower = next(n for n in nodes if n is not leader)
        mine = status(follower)
        assert mine["role"] == "follower", mine
        wd.go(follower.url + "/ui")
        self_text = lambda: wd.text(wd.find("#cluster-self"))
        wait_for("the cluster card to name this node and its leader",
                 lambda: f"This node: {mine['node_id']}, follower" in self_text()
                 and f"leader {status(leader)['node_id']}" in self_text() and "synced" in self_text())
        assert wd.attribute(wd.find("#cluster-single"), "hidden") is not None, "the single-node line is shown"
        rows = lambda: {r["key"]: r["cells"] for r in wd.script(READ_TABLE, "#cluster-nodes table")}
        wait_for("both members listed, the leader as leader",
                 lambda: set(rows()) == {"ui-a", "ui-b"} and rows()[status(leader)["node_id"]][1] == "leader")
        print(f"cluster card: {self_text()}")
        wd.screenshot(os.path.join(out, "ui-cluster.png"))
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def check_partitioned(wd, binary, tmp, out):
    """Two nodes of a partitioned cluster (4 partitions, one holder each): either node's
    view shows the partition map, and its metric list is the whole cluster's."""
    redis = Redis(tmp)
    nodes = []
    try:
        for name in ("ui-pa", "ui-pb"):
            nodes.append(Service(binary, tmp, name, ["--cluster", f"redis://127.0.0.1:{redis.port}",
                                                     "--cluster-name", f"uip{os.getpid()}", "--node-id", name,
                                                     "--lease", "1s", "--partitions", "4",
                                                     "--replication-factor", "1"]))
        status = lambda n: n.json("/v1/status")[0]["cluster"]
        held = lambda n: {h["partition"] for h in status(n)["partitioning"]["held"] if h["state"] == "ready"}
        wait_for("the four partitions split over both nodes",
                 lambda: held(nodes[0]) | held(nodes[1]) == {0, 1, 2, 3} and held(nodes[0]) and held(nodes[1]))
        b = nodes[1]
        wd.go(b.url + "/ui")
        rows = lambda: {r["key"]: r["cells"] for r in wd.script(READ_TABLE, "#cluster-partitions table")}
        def map_shown():
            r = rows()
            return (set(r) == {"0", "1", "2", "3"} and all(c[1] in ("ui-pa", "ui-pb") for c in r.values())
                    and {int(k) for k, c in r.items() if c[2] == "ready"} == held(b))
        wait_for("the partition map: every partition's holder, this node's own ready", map_shown)
        assert wd.attribute(wd.find("#cluster-nodes"), "hidden") is not None, "the unpartitioned members table is shown"
        names = sorted(m["metric"] for m in b.json("/v1/metrics")[0]["metrics"])
        assert names == sorted(m["metric"] for m in nodes[0].json("/v1/metrics")[0]["metrics"]), "nodes disagree"
        page_names = lambda: sorted(r["key"] for r in wd.script(READ_TABLE, "#metrics"))
        wait_for("the metric list: the whole cluster's", lambda: page_names() == names)
        print(f"partitions card: {wd.text(wd.find('#partitions-self'))}")
        wd.screenshot(os.path.join(out, "ui-partitions.png"))
    finally:
        for n in nodes:
            n.stop()
        redis.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--telemetryd", required=True)
    ap.add_argument("--out", required=True, help="folder for the screenshots")
    ap.add_argument("--cluster", action="store_true", help="check the cluster card on two cluster nodes")
    ap.add_argument("--partitioned", action="store_true", help="check the partition map on a partitioned cluster")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tdui-")
    driver = wd = svc = None
    started = time.monotonic()
    try:
        driver, wd = start_driver(tmp)
        if args.cluster:
            check_cluster(wd, args.telemetryd, tmp, args.out)
        elif args.partitioned:
            check_partitioned(wd, args.telemetryd, tmp, args.out)
        else:
            svc = Service(args.telemetryd, tmp)
            check(wd, svc, args.out)
        print(f"PASS in {time.monotonic() - started:.1f} s; screenshots in {args.out}")
        return 0
    except Skip as e:
        print(f"SKIP: {e}")
        return SKIP
    except AssertionError as e:
        print(f"FAIL: {e}")
        if wd and wd.session:
            try:
                wd.screenshot(os.path.join(args.out, "ui-failure.png"))
                print(f"screenshot of the failure: {os.path.join(args.out, 'ui-failure.png')}")
            except (WebDriverError, OSError):
                pass
        if svc:
            with open(svc.log) as f:
                print("telemetryd log (tail):\n" + "".join(f.readlines()[-20:]))
        return 1
    finally:
        if wd:
            wd.stop()
        if driver:
            driver.terminate()
            try:
                driver.wait(timeout=10)
            except subprocess.TimeoutExpired:
                driver.kill()
        if svc:
            svc.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

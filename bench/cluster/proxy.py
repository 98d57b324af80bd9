#!/usr/bin/env python3
"""bench/cluster/proxy.py: a TCP relay whose link bench/cluster_chaos.sh can cut, heal,
or make lose a reply, to inject network faults between a node and Redis (or between
the Redis replica and its master).

  proxy.py --listen PORT --to PORT --control FILE

Relays every connection accepted on 127.0.0.1:PORT to 127.0.0.1:TO. The control file
(read every 20 ms; missing or empty = ok) holds one word:
  ok     relay both ways;
  cut    relay nothing, silently: sockets stay open, what arrives waits in the proxy
         (and in the kernel's buffers once the proxy stops reading), as behind a
         partition; new connections are accepted and wait too. "ok" again delivers
         what waited, in order;
  drop   a lost reply: the next bytes a client sends are relayed, the server's answer
         to them is thrown away, and 0.3 s later both sides of that connection are
         closed (a TCP stream cannot go on past lost bytes). The proxy then writes "ok"
         into the file itself.
Logs one line per state change and per dropped reply to stdout.
"""
import argparse
import asyncio
import sys
import time


def log(msg):
    print(f"{time.time():.3f} {msg}", flush=True)


class Proxy:
    def __init__(self, to, control):
        self.to, self.control = to, control
        self.state = "ok"
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.drop_armed = False  # "drop": the next client->server bytes pick a victim

    async def watch(self):
        while True:
            try:
                with open(self.control) as f:
                    want = f.read().strip() or "ok"
            except FileNotFoundError:
                want = "ok"
            if want not in ("ok", "cut", "drop"):
                want = "ok"
            if want != self.state:
                log(f"state {self.state} -> {want}")
                self.state = want
                if want == "cut":
                    self.flowing.clear()
                else:
                    self.flowing.set()
                self.drop_armed = want == "drop"
            await asyncio.sleep(0.02)

    async def pump(self, reader, writer, conn, upstream):
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                await self.flowing.wait()
                if conn["dropping"]:
                    continue  # the lost reply; nothing more reaches the server either
                writer.write(data)
                await writer.drain()
                if upstream and self.drop_armed:
                    self.drop_armed = False
                    conn["dropping"] = True
                    log(f"dropping the reply to {len(data)} bytes, closing the connection")
                    asyncio.get_running_loop().call_later(0.3, conn["close"])
                    with open(self.control, "w") as f:
                        f.write("ok\n")
        except (ConnectionError, OSError):
            pass
        finally:
            conn["close"]()

    async def serve(self, creader, cwriter):
        await self.flowing.wait()
        try:
            sreader, swriter = await asyncio.open_connection("127.0.0.1", self.to)
        except OSError:
            cwriter.close()
            return
        conn = {"dropping": False}

        def close():
            for w in (cwriter, swriter):
                try:
                    w.transport.abort()
                except Exception:  # noqa: BLE001 - already closed
                    pass
        conn["close"] = close
        await asyncio.gather(self.pump(creader, swriter, conn, True),
                             self.pump(sreader, cwriter, conn, False))


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--to", type=int, required=True)
    ap.add_argument("--control", required=True)
    a = ap.parse_args()
    p = Proxy(a.to, a.control)
    server = await asyncio.start_server(p.serve, "127.0.0.1", a.listen, reuse_address=True)
    log(f"relaying :{a.listen} -> :{a.to}, control {a.control}")
    await asyncio.gather(server.serve_forever(), p.watch())


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)

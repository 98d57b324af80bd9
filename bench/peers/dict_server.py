"""bench/peers/dict_server.py: the design telemetryd replaces, as a wrk peer.

One Python asyncio worker (Uvicorn) answering GET /v1/series/{key} from a dict of
pre-rendered bodies, and swapping in a new dict every interval (re-reading the dump
file, as the old service re-read its aggregates). Run:
  BODIES=/path/bodies.json INTERVAL=2 python3 -m uvicorn --app-dir bench/peers \
      dict_server:app --host 127.0.0.1 --port 18082 --workers 1 --no-access-log
"""
import asyncio
import json
import os

BODIES = os.environ.get("BODIES", "bodies.json")
INTERVAL = float(os.environ.get("INTERVAL", "2"))

table = {}
NOT_FOUND = b'{"error":"no such series"}'
HEADERS = [(b"content-type", b"application/json")]


def load():
    with open(BODIES) as f:
        return {k: v.encode() for k, v in json.load(f).items()}


async def refresher():
    global table
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(INTERVAL)
        try:
            table = await loop.run_in_executor(None, load)  # the swap is one assignment
        except Exception as e:  # keep serving the old dict
            print("reload failed:", e, flush=True)


async def app(scope, receive, send):
    global table
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                table = load()
                asyncio.get_running_loop().create_task(refresher())
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = table.get(scope["path"])
    status = 200 if body is not None else 404
    if body is None:
        body = NOT_FOUND
    await send({"type": "http.response.start", "status": status,
                "headers": HEADERS + [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})

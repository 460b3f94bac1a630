"""Tiny OTLP/HTTP sink for the tracing on/off comparison: accepts ``POST /v1/traces`` (and
metrics/logs) on 127.0.0.1, counts requests and bytes, answers 200 with an empty protobuf body.

    python bench/otlp_sink.py --port 18912

``GET /stats`` returns the counters as JSON. Prints ``ready`` on stdout once listening.
"""
from __future__ import annotations

import argparse
import asyncio

from aiohttp import web


def make_app() -> web.Application:
    stats = {"requests": 0, "bytes": 0}

    async def sink(request: web.Request) -> web.Response:
        body = await request.read()
        stats["requests"] += 1
        stats["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stat(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/traces", sink)
    app.router.add_post("/v1/metrics", sink)
    app.router.add_post("/v1/logs", sink)
    app.router.add_get("/stats", stat)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()

    async def run():
        runner = web.AppRunner(make_app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", a.port).start()
        print("ready", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()

"""Tiny OTLP/HTTP sink for the tracing comparison: accepts ``POST [/PREFIX]/v1/traces`` (and
metrics/logs) on 127.0.0.1, counts requests and bytes, in all and per PREFIX (so that gateways
exporting to the same sink under different paths are counted apart), answers 200 with an empty
protobuf body.

    python bench/otlp_sink.py --port 18912

``GET /stats`` returns the counters as JSON (``{"requests", "bytes", "by_prefix": {PREFIX: {...}}}``).
Prints ``ready`` on stdout once listening.
"""
from __future__ import annotations

from aiohttp import web

import aio_serve


def make_app() -> web.Application:
    stats: dict = {"requests": 0, "bytes": 0, "by_prefix": {}}

    async def sink(request: web.Request) -> web.Response:
        body = await request.read()
        prefix = request.match_info["prefix"].strip("/")
        for counts in (stats, stats["by_prefix"].setdefault(prefix, {"requests": 0, "bytes": 0})):
            counts["requests"] += 1
            counts["bytes"] += len(body)
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def stat(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    for signal in ("traces", "metrics", "logs"):
        app.router.add_post("/{prefix:.*}v1/" + signal, sink)
    app.router.add_get("/stats", stat)
    return app


if __name__ == "__main__":
    aio_serve.main(make_app)

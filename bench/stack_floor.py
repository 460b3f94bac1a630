"""The stack's floor: the least a Sanic + aiohttp gateway can spend on a request.

A benchmark reference, not product code. One Sanic worker with the server settings Vandamme's
own server uses (access log off, no MOTD, the same request size and timeouts), one pooled aiohttp
session with Vandamme's default pool; ``POST /v1/messages`` forwards the request body unchanged to
``UPSTREAM/v1/messages`` and returns the upstream's status, content type and bytes (an SSE answer
chunk by chunk, as it arrives). Nothing is parsed, validated, routed or converted: it is not a
converter. In the "converted" scenarios of ``bench/run.py`` it forwards to the Anthropic-format
upstream, so its row there is the cost of the HTTP stack alone, which Vandamme's conversion comes on
top of.

    python bench/stack_floor.py --port 18920 --upstream http://127.0.0.1:18901/json
"""
from __future__ import annotations

import argparse

import aiohttp
from sanic import Sanic, response

# the request headers an Anthropic upstream needs; everything else is dropped
FORWARDED_HEADERS = ("content-type", "x-api-key", "anthropic-version", "anthropic-beta")


def create_app(upstream: str) -> Sanic:
    app = Sanic("stack_floor")
    app.config.REQUEST_MAX_SIZE = 32 * 1024 * 1024
    app.config.REQUEST_TIMEOUT = 60
    app.config.KEEP_ALIVE_TIMEOUT = 75
    app.config.ACCESS_LOG = False
    app.config.MOTD = False
    url = upstream.rstrip("/") + "/v1/messages"

    @app.before_server_start
    async def open_session(app_):
        app_.ctx.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(
            limit=2048, limit_per_host=0, keepalive_timeout=30.0, ttl_dns_cache=300))

    @app.after_server_stop
    async def close_session(app_):
        await app_.ctx.session.close()

    @app.post("/v1/messages")
    async def messages(request):
        headers = {k: v for k in FORWARDED_HEADERS if (v := request.headers.get(k)) is not None}
        async with request.app.ctx.session.post(url, data=request.body, headers=headers) as up:
            ctype = up.headers.get("content-type", "application/json")
            if not ctype.startswith("text/event-stream"):
                return response.raw(await up.read(), status=up.status, content_type=ctype)
            out = await request.respond(status=up.status, content_type=ctype)
            async for chunk in up.content.iter_any():
                await out.send(chunk)
            await out.eof()

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="Anthropic-format base URL (without /v1)")
    a = ap.parse_args()
    create_app(a.upstream).run(host=a.host, port=a.port, single_process=True, access_log=False, motd=False)


if __name__ == "__main__":
    main()

"""Recording upstream for the answer audit (``bench/answers.py``, run by ``bench/run.py``).

Serves the same static answers as the nginx upstream (``bench/upstream.py``), choosing JSON or SSE
by the request's own ``"stream"`` field (it reads the body, which nginx cannot), and keeps the last
request body it received per format, so the audit can compare what a gateway sent upstream with
what the client sent it:

* ``POST .../chat/completions``  the OpenAI chat completion, or the 200-chunk OpenAI stream
* ``POST .../messages``          the Anthropic message, or the 200-delta Anthropic stream
* ``GET /last/openai``, ``GET /last/anthropic``  the last request body received, byte for byte,
  and forgets it (404 when none came since the last ``GET``)

    python bench/capture_upstream.py --port 18913

Binds 127.0.0.1 only. Prints ``ready`` on stdout once listening.
"""
from __future__ import annotations

import json

from aiohttp import web

import aio_serve
import upstream

# format -> (non-stream answer, stream answer)
ANSWERS = {
    "openai": (upstream.openai_json(), upstream.openai_sse()),
    "anthropic": (upstream.anthropic_json(), upstream.anthropic_sse()),
}


def _wants_stream(body: bytes) -> bool:
    try:
        return json.loads(body).get("stream") is True
    except (ValueError, AttributeError):
        return False


def make_app() -> web.Application:
    last: dict[str, bytes] = {}

    def answer(fmt: str):
        async def handler(request: web.Request) -> web.Response:
            body = await request.read()
            last[fmt] = body
            stream = _wants_stream(body)
            return web.Response(body=ANSWERS[fmt][stream],
                                content_type="text/event-stream" if stream else "application/json")
        return handler

    async def last_body(request: web.Request) -> web.Response:
        body = last.pop(request.match_info["fmt"], None)
        if body is None:
            return web.Response(status=404)
        return web.Response(body=body, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{prefix:.*}chat/completions", answer("openai"))
    app.router.add_post("/{prefix:.*}messages", answer("anthropic"))
    app.router.add_get("/last/{fmt}", last_body)
    return app


if __name__ == "__main__":
    aio_serve.main(make_app)

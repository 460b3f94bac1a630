"""Slow streaming upstream for the "1,000 open streams" memory test.

Answers every POST on ``.../chat/completions`` with an OpenAI SSE stream and on ``.../messages``
with an Anthropic SSE stream that drip one chunk per second (``--interval``), ``--chunks`` chunks
long, so that streams stay open while the gateway's memory is sampled.

    python bench/slow_upstream.py --port 18911 [--interval 1.0] [--chunks 60]

Binds 127.0.0.1 only. Prints ``ready`` on stdout once listening.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys

from aiohttp import web

from aio_serve import serve

CREATED = 1_730_000_000


def _j(o) -> bytes:
    return json.dumps(o, separators=(",", ":")).encode()


async def _drain_body(request: web.Request) -> None:
    await request.read()


def make_app(interval: float, chunks: int) -> web.Application:
    stats = {"open": 0, "total": 0}

    async def openai_stream(request: web.Request) -> web.StreamResponse:
        await _drain_body(request)
        stats["open"] += 1
        stats["total"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": CREATED, "model": "gpt-4o"}
        try:
            await resp.write(b"data: " + _j({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}) + b"\n\n")
            for i in range(chunks):
                await asyncio.sleep(interval)
                await resp.write(b"data: " + _j({**base, "choices": [{"index": 0, "delta": {"content": f"tick {i} "}, "finish_reason": None}]}) + b"\n\n")
            await resp.write(b"data: " + _j({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n")
            await resp.write(b"data: " + _j({**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": chunks, "total_tokens": 10 + chunks}}) + b"\n\n")
            await resp.write(b"data: [DONE]\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            stats["open"] -= 1
        return resp

    async def anthropic_stream(request: web.Request) -> web.StreamResponse:
        await _drain_body(request)
        stats["open"] += 1
        stats["total"] += 1
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)

        def ev(name, data):
            return f"event: {name}\ndata: ".encode() + _j(data) + b"\n\n"

        try:
            await resp.write(ev("message_start", {"type": "message_start", "message": {"id": "msg_slow", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5", "content": [], "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 10, "output_tokens": 1}}}))
            await resp.write(ev("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}))
            for i in range(chunks):
                await asyncio.sleep(interval)
                await resp.write(ev("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": f"tick {i} "}}))
            await resp.write(ev("content_block_stop", {"type": "content_block_stop", "index": 0}))
            await resp.write(ev("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": chunks}}))
            await resp.write(ev("message_stop", {"type": "message_stop"}))
        finally:
            stats["open"] -= 1
        return resp

    async def stat(request: web.Request) -> web.Response:
        return web.json_response(stats)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/{prefix:.*}chat/completions", openai_stream)
    app.router.add_post("/{prefix:.*}messages", anthropic_stream)
    app.router.add_get("/stats", stat)
    return app


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--chunks", type=int, default=60)
    a = ap.parse_args()

    serve(make_app(a.interval, a.chunks), a.port)
    sys.exit(0)


if __name__ == "__main__":
    main()

"""A fake Anthropic Messages API whose streams drip: one text delta every ``interval`` seconds,
``max_tokens`` deltas long, so a test picks each stream's length through its request (a request
without ``stream`` is answered whole after as long). Runs on its own event loop in a background
thread (``with DripUpstream() as up: up.base_url``), for tests that drive a gateway in another
process."""
from __future__ import annotations

import asyncio
import json
import threading

from aiohttp import web

from harness import close_loop


def _event(name: str, data: dict) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


class DripUpstream:
    def __init__(self, interval: float = 0.2):
        self.interval = interval
        self.started = 0  # streams begun
        self.base_url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.started += 1
        message = {"id": "msg_drip", "type": "message", "role": "assistant", "model": body["model"],
                   "content": [], "stop_reason": None, "stop_sequence": None,
                   "usage": {"input_tokens": 1, "output_tokens": 1}}
        if not body.get("stream"):
            await asyncio.sleep(self.interval * int(body["max_tokens"]))
            return web.json_response({**message, "content": [{"type": "text", "text": "done"}],
                                      "stop_reason": "end_turn"})
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(_event("message_start", {"type": "message_start", "message": message}))
        await resp.write(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                        "content_block": {"type": "text", "text": ""}}))
        for i in range(int(body["max_tokens"])):
            await asyncio.sleep(self.interval)
            await resp.write(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                            "delta": {"type": "text_delta", "text": f"t{i} "}}))
        await resp.write(_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
        await resp.write(_event("message_delta", {"type": "message_delta",
                                                  "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                                  "usage": {"output_tokens": int(body["max_tokens"])}}))
        await resp.write(_event("message_stop", {"type": "message_stop"}))
        await resp.write_eof()
        return resp

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/messages", self._messages)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    def __enter__(self) -> "DripUpstream":
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        try:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        finally:
            close_loop(self._loop, self._thread)

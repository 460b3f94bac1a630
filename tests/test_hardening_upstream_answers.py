"""Upstream answers that are not what was asked for are 502s, buffered answers are capped, and a
passthrough stream that already ended (message_stop) gets nothing after it — a misbehaving
upstream on 127.0.0.1 speaking raw HTTP, the real server in front of it."""
from __future__ import annotations

import httpx
import pytest
from aiohttp import web

from fakes.anthropic_upstream import message_json, sse_events
from fakes.loopback import LoopbackServer
from harness import LiveGateway

LIMIT = 64 * 1024


class RawUpstream(LoopbackServer):
    """Answers each POST by the behaviour named in the request's model (``an:<behaviour>``)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def routes(self, app):
        app.router.add_post("/v1/messages", self._answer)
        app.router.add_post("/v1/chat/completions", self._answer)

    async def _answer(self, request: web.Request):
        self.count += 1
        body = await request.json()
        how = body["model"]
        if how == "html":
            return web.Response(text="<html>Bad gateway</html>", content_type="text/html")
        if how == "broken-json":
            return web.Response(body=b'{"type": "message", "content": [', content_type="application/json")
        if how == "json-for-stream":
            return web.json_response(message_json("m", "hi"))
        if how == "huge":
            return web.json_response({**message_json("m", "x" * (2 * LIMIT))})
        if how == "huge-chunked":  # no Content-Length: the cap counts as it reads
            resp = web.StreamResponse(headers={"content-type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"pad": "')
            for _ in range(4):
                await resp.write(b"y" * LIMIT)
            await resp.write(b'"}')
            await resp.write_eof()
            return resp
        if how in ("stream-then-drop", "long-stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            text = " ".join(["word"] * (20000 if how == "long-stream" else 3))
            for event in sse_events("m", text):
                await resp.write(event)
            if how == "stream-then-drop":  # the answer is complete, then the connection breaks
                request.transport.close()
                return resp
            await resp.write_eof()
            return resp
        if how == "sse-for-buffered":
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"event: ping\ndata: {}\n\n")
            await resp.write_eof()
            return resp
        return web.json_response(message_json(how, "fine"))


def spec(u):
    return f"""
version: 1
server: {{max_retries: 2, retry_backoff: 0.01, max_response_bytes: {LIMIT}}}
default_provider: an
providers:
  an: {{format: anthropic, base_url: "{u['raw']}", api_keys: [sk-an-0123456789]}}
  oa: {{format: openai, base_url: "{u['raw']}/v1", api_keys: [sk-oa-0123456789]}}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    raw = RawUpstream()
    with LiveGateway(spec, {"raw": raw}, tmp_path_factory.mktemp("g")) as gw:
        gw.raw = raw
        yield gw


def ask(gw, model, stream=False):
    return httpx.post(gw.base_url + "/v1/messages", timeout=20, json={
        "model": model, "max_tokens": 5, "stream": stream, "messages": [{"role": "user", "content": "a"}]})


@pytest.mark.parametrize("model,stream,needle", [
    ("an:html", False, "text/html"),
    ("oa:html", False, "text/html"),
    ("an:broken-json", False, "the body is not JSON"),
    ("an:json-for-stream", True, "for a streaming request"),
    ("oa:json-for-stream", True, "for a streaming request"),
    ("an:sse-for-buffered", False, "did not ask for one"),
    ("an:huge", False, "max_response_bytes"),
    ("an:huge-chunked", False, "max_response_bytes"),
    ("oa:huge", False, "max_response_bytes"),
])
def test_wrong_answers_are_502_and_not_retried(live, model, stream, needle):
    before = live.raw.count
    r = ask(live, model, stream)
    assert r.status_code == 502, r.text
    err = r.json()["error"]
    assert err["type"] == "api_error" and needle in err["message"]
    assert live.raw.count == before + 1  # the same provider would answer the same: no retry
    assert ask(live, "an:fine").status_code == 200  # and the next request is served


def test_passthrough_stream_ends_at_message_stop(live):
    r = ask(live, "an:stream-then-drop", stream=True)
    assert r.status_code == 200
    events = [line[7:] for line in r.text.splitlines() if line.startswith("event: ")]
    assert events[-1] == "message_stop" and "error" not in events


def test_streams_are_not_capped(live):
    r = ask(live, "an:long-stream", stream=True)
    assert r.status_code == 200 and len(r.content) > 4 * LIMIT
    last = [line for line in r.text.splitlines() if line.startswith("event: ")][-1]
    assert last == "event: message_stop"

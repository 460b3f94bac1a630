"""No key ever leaves: an upstream that echoes the keys it receives in its error messages (as some
do: "Incorrect API key provided: sk-..."), with key failover through a whole ring, a passthrough
(client) key, and a converted stream that fails mid-way — nothing the gateway emits (response
bodies, stream error events, log lines at TRACE, span attributes/events/status) holds a key."""
from __future__ import annotations

import json

import httpx
from aiohttp import web
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from fakes.loopback import LoopbackServer
from harness import LiveGateway

RING = ["sk-canary-ring-AAAA1111", "sk-canary-ring-BBBB2222", "sk-canary-ring-CCCC3333"]
CLIENT = "sk-canary-client-DDDD4444"
CANARIES = RING + [CLIENT]


class EchoingUpstream(LoopbackServer):
    """401s that quote the key received (OpenAI and Anthropic wire formats), and a stream that
    fails with an error event quoting it."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def routes(self, app):
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)

    async def _openai(self, request):
        key = request.headers.get("authorization", "")[7:]
        self.seen.append(key)
        body = await request.json()
        if body.get("stream"):
            resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await resp.prepare(request)
            chunk = {"id": "c", "object": "chat.completion.chunk", "model": "m",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi"}}]}
            await resp.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            await resp.write(b"data: " + json.dumps({"error": {"message": f"key {key} revoked mid-stream",
                                                               "code": "401"}}).encode() + b"\n\n")
            await resp.write_eof()
            return resp
        return web.json_response({"error": {"message": f"Incorrect API key provided: {key}",
                                            "type": "invalid_request_error", "code": "invalid_api_key"}},
                                 status=401)

    async def _anthropic(self, request):
        key = request.headers.get("x-api-key", "")
        self.seen.append(key)
        return web.json_response({"type": "error", "error": {
            "type": "authentication_error", "message": f"invalid x-api-key {key}"}}, status=401)


def spec(u):
    ring = ", ".join(RING)
    return f"""
version: 1
server: {{max_retries: 0}}
logging: {{level: TRACE}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['up']}/v1", api_keys: [{ring}]}}
  an: {{format: anthropic, base_url: "{u['up']}", api_keys: ["!PASSTHRU"]}}
"""


def test_no_canary_key_in_anything_emitted(tmp_path):
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE", serialize=True)
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    up = EchoingUpstream()
    bodies: list[str] = []
    try:
        with LiveGateway(spec, {"up": up}, tmp_path, tracer_provider=tp) as gw:
            msg = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
            headers = {"x-api-key": CLIENT}
            r = httpx.post(gw.base_url + "/v1/messages", json={"model": "gpt-4o", **msg}, headers=headers, timeout=15)
            assert r.status_code == 401
            bodies.append(r.text)
            r = httpx.post(gw.base_url + "/v1/messages", json={"model": "an:claude-x", **msg}, headers=headers,
                           timeout=15)
            assert r.status_code == 401
            bodies.append(r.text)
            r = httpx.post(gw.base_url + "/v1/messages", json={"model": "gpt-4o", "stream": True, **msg},
                           headers=headers, timeout=15)
            bodies.append(r.text)
            assert "event: error" in r.text
    finally:
        logger.remove(sink)
    assert set(up.seen) >= set(CANARIES)  # every key really went upstream and was echoed
    assert all("[REDACTED]" in b for b in bodies), bodies  # the echoes were there, scrubbed
    spans = exporter.get_finished_spans()
    emitted = bodies + lines + [s.to_json() for s in spans]
    for text in emitted:
        for canary in CANARIES:
            assert canary not in text, (canary, text[:300])
    assert any(ev.name == "exception" for s in spans for ev in s.events)  # errors are on spans, clean

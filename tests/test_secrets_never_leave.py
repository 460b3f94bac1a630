"""No key ever leaves. Every key of the run is a canary: an OpenAI-format key ring with failover, an
Anthropic-format provider (the body passes through) with a static key, a client's own key for a
`!PASSTHRU` provider, a gateway key (server.auth.keys) and a wrong gateway key. The upstream echoes
the key it receives in its errors, in the body and in a header (as some do: "Incorrect API key
provided: sk-..."), so every key of the ring is exposed in turn, and a converted stream fails
mid-way quoting it.

Nothing the gateway emits holds a canary: response bodies, headers and stream error events, log
lines at TRACE in text and in JSON (loguru ``serialize``), spans as exported over OTLP/HTTP to a
local sink (the bytes that leave the process), and the output of ``vandamme config show`` and
``vandamme validate`` (text and ``--format json``) on specs whose keys are the canaries, valid or
not. (The gateway has no metrics yet; when it has, they belong here too.)"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from loguru import logger
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from fakes.loopback import LoopbackServer
from fakes.otlp_sink import OTLPSink
from harness import LiveGateway

ROOT = Path(__file__).resolve().parent.parent
RING = ["sk-canary-ring-AAAA1111", "sk-canary-ring-BBBB2222", "sk-canary-ring-CCCC3333"]
STATIC = "sk-canary-static-EEEE5555"
CLIENT = "sk-canary-client-DDDD4444"
GATEWAY = "gw-canary-gateway-FFFF6666"
WRONG_GATEWAY = "gw-canary-wrong-GGGG7777"
SHORT_GATEWAY = "gw-canary-HHHH8"  # 15 characters: too short for a gateway key (an invalid spec)
CANARIES = RING + [STATIC, CLIENT, GATEWAY, WRONG_GATEWAY, SHORT_GATEWAY]
MSG = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


class EchoingUpstream(LoopbackServer):
    """401s that quote the key received, in the body and in a header (OpenAI and Anthropic wire
    formats, messages, count_tokens and the model listings), and a stream that fails with an error
    event quoting it."""

    def __init__(self):
        super().__init__()
        self.seen: list[str] = []

    def routes(self, app):
        app.router.add_post("/v1/chat/completions", self._openai)
        app.router.add_post("/v1/messages", self._anthropic)
        app.router.add_post("/v1/messages/count_tokens", self._anthropic)
        app.router.add_get("/v1/models", self._anthropic)  # both formats list models at this path here

    def _key(self, request) -> str:
        key = request.headers.get("x-api-key") or request.headers.get("authorization", "")[7:]
        self.seen.append(key)
        return key

    async def _openai(self, request):
        key = self._key(request)
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
                                 status=401, headers={"x-echo": key})

    async def _anthropic(self, request):
        key = self._key(request)
        return web.json_response({"type": "error", "error": {
            "type": "authentication_error", "message": f"invalid x-api-key {key}"}}, status=401,
            headers={"x-echo": key})


def spec(u):
    return f"""
version: 1
server:
  max_retries: 0
  auth: {{keys: [{{name: team, key: {GATEWAY}}}]}}
logging: {{level: TRACE, access_log: true}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['up']}/v1", api_keys: [{", ".join(RING)}]}}
  ans: {{format: anthropic, base_url: "{u['up']}", api_keys: [{STATIC}]}}
  an: {{format: anthropic, base_url: "{u['up']}", api_keys: ["!PASSTHRU"]}}
"""


# (what, path, model, stream, headers, expected status): every way a key enters a request.
TRAFFIC = [
    ("ring failover", "/v1/messages", "gpt-4o", False, {"authorization": f"Bearer {GATEWAY}"}, 401),
    ("ring stream failing mid-way", "/v1/messages", "gpt-4o", True, {"x-vandamme-key": GATEWAY}, 200),
    ("static key, passthrough body", "/v1/messages", "ans:claude-x", False, {"x-api-key": GATEWAY}, 401),
    ("client key", "/v1/messages", "an:claude-x", False, {"x-vandamme-key": GATEWAY, "x-api-key": CLIENT}, 401),
    ("client key, streamed", "/v1/messages", "an:claude-x", True, {"x-vandamme-key": GATEWAY, "x-api-key": CLIENT},
     401),
    ("client key, count_tokens", "/v1/messages/count_tokens", "an:claude-x", False,
     {"x-vandamme-key": GATEWAY, "authorization": f"Bearer {CLIENT}"}, 401),
    ("wrong gateway key", "/v1/messages", "gpt-4o", False, {"x-vandamme-key": WRONG_GATEWAY}, 401),
    ("wrong gateway key as the client key", "/v1/messages", "gpt-4o", False, {"x-api-key": WRONG_GATEWAY}, 401),
    ("gateway key as the client key of !PASSTHRU", "/v1/messages", "an:claude-x", False, {"x-api-key": GATEWAY},
     401),
]


def test_no_canary_key_in_anything_emitted(tmp_path):
    text_lines: list[str] = []
    json_lines: list[str] = []
    sinks = [logger.add(text_lines.append, level="TRACE"),
             logger.add(json_lines.append, level="TRACE", serialize=True)]
    tp = TracerProvider(resource=Resource.create({"service.name": "vdm-secrets"}))
    up, collector = EchoingUpstream(), OTLPSink()
    bodies: dict[str, str] = {}
    headers_out: list[str] = []
    try:
        with LiveGateway(spec, {"up": up, "otlp": collector}, tmp_path, tracer_provider=tp) as gw:
            tp.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=collector.base_url + "/v1/traces")))
            for what, path, model, stream, headers, status in TRAFFIC:
                r = httpx.post(gw.base_url + path, json={"model": model, "stream": stream, **MSG}, headers=headers,
                               timeout=15)
                assert r.status_code == status, (what, r.text)
                bodies[what] = r.text
                headers_out.append(str(r.headers.raw))
            r = httpx.get(gw.base_url + "/v1/models", headers={"x-vandamme-key": GATEWAY, "x-api-key": CLIENT},
                          timeout=15)
            assert r.status_code == 200, r.text
            bodies["models"] = r.text
            assert tp.force_flush(10_000)
    finally:
        for sink in sinks:
            logger.remove(sink)
        tp.shutdown()
    assert set(up.seen) >= set(RING + [STATIC, CLIENT])  # every key really went upstream and was echoed
    assert GATEWAY not in up.seen and WRONG_GATEWAY not in up.seen  # gateway keys never go upstream
    assert "event: error" in bodies["ring stream failing mid-way"]
    for what in ("ring failover", "ring stream failing mid-way", "static key, passthrough body", "client key"):
        assert "[REDACTED]" in bodies[what], bodies[what]  # the echo was there, scrubbed
    assert text_lines and json_lines and collector.payloads  # each channel really carried the run
    assert "exception" in collector.span_events()  # the failures are on the spans, clean
    emitted = {"response body": list(bodies.values()), "response headers": headers_out,
               "text log": text_lines, "JSON log": json_lines,
               "OTLP export": [p.decode("utf-8", "replace") for p in collector.payloads]}
    assert_no_canary(emitted)


def test_the_gateway_key_never_goes_upstream_as_a_client_key(tmp_path):
    up = EchoingUpstream()
    with LiveGateway(spec, {"up": up}, tmp_path) as gw:
        r = httpx.post(gw.base_url + "/v1/messages", json={"model": "an:claude-x", **MSG}, timeout=15,
                       headers={"x-vandamme-key": GATEWAY, "x-api-key": GATEWAY})
    assert r.status_code == 401 and GATEWAY not in up.seen, (r.text, up.seen)


def assert_no_canary(emitted: dict[str, list[str]]) -> None:
    for channel, texts in emitted.items():
        for text in texts:
            for canary in CANARIES:
                assert canary not in text, (channel, canary, text[:400])


# Specs that fail while naming the canaries, in YAML, schema and semantic checks (loading stops at
# the first phase that fails, so each has its own folder).
INVALID_YAML = f"""
version: 1
providers:
  oa: {{format: openai, base_url: "http://127.0.0.1:9/v1", api_keys: [{RING[0]}, "{RING[1]}]}}
"""
INVALID_SCHEMA = f"""
version: 1
server:
  auth: {{keys: [{{name: team, key: {GATEWAY}, scope: all}}, {{name: short, key: {SHORT_GATEWAY}}}]}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "http://127.0.0.1:9/v1", api_keys: {RING[0]}}}
  ans: {{format: anthropic, base_url: "http://127.0.0.1:9", api_keys: [{STATIC}, 42]}}
  an: {{format: anthropic, base_url: "http://127.0.0.1:9", api_key: [{CLIENT}]}}
"""
INVALID_SEMANTICS = f"""
version: 1
default_provider: oa
providers:
  oa:
    format: openai
    base_url: "http://127.0.0.1:9/v1"
    api_keys: [{RING[1]}]
    headers:
      x-api-key: "{{{{ nope }}}}{RING[2]}"
      authorization: "Bearer {STATIC}\\r\\nx-injected: 1"
      x-auth-token: "{{% include 'x' %}}{CLIENT}"
"""


def cli_outputs(folder: Path) -> dict[str, subprocess.CompletedProcess]:
    """``config show``, ``validate`` and ``validate --format json`` on ``folder``, run at once."""
    commands = {"config show": ["config", "show"], "validate": ["validate"],
                "validate --format json": ["validate", "--format", "json"]}
    procs = {name: subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", *args, str(folder)], cwd=ROOT, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for name, args in commands.items()}
    out = {}
    for name, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=60)
        out[name] = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    return out


def test_no_canary_in_cli_output(tmp_path):
    folders = {"valid": spec({"up": "http://127.0.0.1:9"}), "invalid YAML": INVALID_YAML,
               "invalid schema": INVALID_SCHEMA, "invalid semantics": INVALID_SEMANTICS}
    emitted = {}
    for name, text in folders.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        (folder / "gateway.yaml").write_text(text)
        for command, r in cli_outputs(folder).items():
            assert r.returncode == (0 if name == "valid" else 1), (name, command, r.stdout, r.stderr)
            emitted[f"{command} ({name})"] = [r.stdout + r.stderr]
    assert "****1111" in emitted["config show (valid)"][0]  # the keys are there, masked
    assert "YAML syntax error" in emitted["config show (invalid YAML)"][0]
    assert "api_keys" in emitted["validate (invalid schema)"][0]
    assert "headers" in emitted["validate --format json (invalid semantics)"][0]
    assert_no_canary(emitted)

"""Fuzzing: generated requests (tests/fuzz_strategies.py) — valid, almost valid and garbage
Anthropic Messages bodies, odd headers, paths and methods — sent as raw bytes to one real gateway
with an OpenAI-format provider, an Anthropic-format provider, fallback routes both ways (their
primary target always answers 503) and middleware routes, all upstreams fakes on 127.0.0.1.

Invariants, per case: an answer (within CASE_TIMEOUT) with no 5xx (no fake answers a 5xx but the
fallback routes' primary, whose 503 the fallback covers, so a 5xx is the gateway's own); every
non-2xx body is Anthropic-shaped; a 2xx stream ends with ``message_stop`` or a well-formed
``event: error``, any other 2xx is a JSON object; a body that is a JSON object reaches the
Anthropic upstream still parseable; no "Traceback" in any log line (loguru at DEBUG and the
standard logging module); the server's loop keeps running. After each run: /health and a plain
request are still served.

``VDM_FUZZ_EXAMPLES`` sets the number of cases (1,000 by default; ``make fuzz`` runs 50,000), in
runs of at most CHUNK, each with its own fixed seed, so every run is reproducible.
"""
from __future__ import annotations

import http.client
import json
import logging
import math
import os
import socket
import time
from collections import Counter

import httpx
import orjson
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, seed, settings
from loguru import logger

from fakes.anthropic_upstream import FakeAnthropic
from fakes.loopback import LoopbackServer
from fakes.openai_upstream import FakeOpenAI
from fuzz_strategies import HttpCase, http_cases
from harness import LiveGateway

EXAMPLES = int(os.environ.get("VDM_FUZZ_EXAMPLES", "1000"))
CHUNK = 5_000  # cases per hypothesis run: bounds the memory hypothesis keeps about a run
CHUNKS = [(i, min(CHUNK, EXAMPLES - i * CHUNK)) for i in range(math.ceil(EXAMPLES / CHUNK))]
SLOW_IS_FINE = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example,
                HealthCheck.filter_too_much]
CASE_TIMEOUT = 15.0  # seconds for one exchange; longer is a hang
ANTHROPIC_ERROR_TYPES = {"invalid_request_error", "authentication_error", "billing_error", "permission_error",
                         "not_found_error", "request_too_large", "rate_limit_error", "api_error", "timeout_error",
                         "overloaded_error"}
MIDDLEWARE = """[{inject_system: {text: "Be brief."}}, {clamp: {max_tokens: 64, temperature: {min: 0, max: 1}}},
             {redact: {patterns: [secret]}}, {drop_params: {fields: [top_k]}}]"""


def spec(u):
    return f"""
version: 1
server: {{max_retries: 0}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [sk-fuzz-oa-0123456789], reasoning: true}}
  an: {{format: anthropic, base_url: "{u['an']}", api_keys: [sk-fuzz-an-0123456789], models: [claude-x]}}
  oadown: {{format: openai, base_url: "{u['down']}/v1", api_keys: [sk-fuzz-down-0123456789]}}
  andown: {{format: anthropic, base_url: "{u['down']}", api_keys: [sk-fuzz-down-0123456789]}}
aliases: {{fast: "oa:gpt-4o-mini", claude: "an:claude-sonnet-4-5"}}
routes:
  - {{name: openai-first, match: {{model: "fb-*"}}, to: "oadown:gpt-4o", fallbacks: ["an:claude-fallback"]}}
  - {{name: anthropic-first, match: {{model: "fbo-*"}}, to: "andown:claude-x", fallbacks: ["oa:gpt-4o-mini"]}}
  - {{name: middleware-anthropic, match: {{model: "mw-*"}}, to: "an:claude-mw", middleware: {MIDDLEWARE}}}
  - {{name: middleware-openai, match: {{model: "mwo-*"}}, to: "oa:gpt-4o", middleware: {MIDDLEWARE}}}
"""


def json_object(raw: bytes) -> dict | None:
    """``raw`` as a JSON object (Python's parser, as an independent judge), or None."""
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class LenientAnthropic(FakeAnthropic):
    """The fake Anthropic API, answering a body it cannot parse 400 as the real one does (the base
    class would fail with a 500 of its own) and counting those; it keeps no history."""

    def __init__(self):
        super().__init__()
        self.unparseable = 0

    async def _messages(self, request):
        return await self._parsed_or_400(request, super()._messages)

    async def _count(self, request):
        return await self._parsed_or_400(request, super()._count)

    async def _parsed_or_400(self, request, handler):
        self.requests.clear()
        body = json_object(await request.read())
        if body is None or not isinstance(body.get("model"), str):
            self.unparseable += 1
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "not a JSON object"}}, status=400)
        return await handler(request)


class DownUpstream(LoopbackServer):
    """Every POST is a 503 overloaded: the primary target of both fallback routes."""

    def routes(self, app):
        app.router.add_post("/{tail:.*}", self._down)

    async def _down(self, request):
        await request.read()
        return web.json_response({"type": "error", "error": {"type": "overloaded_error", "message": "down"}},
                                 status=503)


class LogCapture(logging.Handler):
    """Every log line: loguru's at DEBUG and up (tracebacks included) and the standard logging
    module's (Sanic, asyncio, aiohttp)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self._sink = None

    def emit(self, record):
        self.lines.append(self.format(record))

    def __enter__(self):
        self._sink = logger.add(self.lines.append, level="DEBUG", format="{level} {message}")
        logging.getLogger().addHandler(self)
        return self

    def __exit__(self, *exc):
        logger.remove(self._sink)
        logging.getLogger().removeHandler(self)

    def take(self) -> list[str]:
        """The lines logged since the last call (the server's thread may be adding more)."""
        n = len(self.lines)
        taken = self.lines[:n]
        del self.lines[:n]
        return taken


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    fakes = {"oa": FakeOpenAI(), "an": LenientAnthropic(), "down": DownUpstream()}
    with LogCapture() as logs, LiveGateway(spec, fakes, tmp_path_factory.mktemp("fuzz")) as gw:
        gw.fakes, gw.logs = fakes, logs
        gw.port = int(gw.base_url.rsplit(":", 1)[1])
        yield gw


def exchange(port: int, case: HttpCase) -> tuple[int, str, bytes]:
    """Send the case's bytes on a new connection: (status, content type, body) of the answer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=CASE_TIMEOUT) as sock:
            sock.sendall(case.wire())
            answer = http.client.HTTPResponse(sock, method="HEAD" if case.method == b"HEAD" else "POST")
            answer.begin()
            return answer.status, answer.getheader("content-type") or "", answer.read()
    except (OSError, http.client.HTTPException) as exc:
        raise AssertionError(f"no complete answer: {exc!r}") from exc


def assert_anthropic_error(raw: bytes) -> None:
    err = orjson.loads(raw)
    assert isinstance(err, dict) and err.get("type") == "error", raw[:500]
    inner = err.get("error")
    assert isinstance(inner, dict) and inner.get("type") in ANTHROPIC_ERROR_TYPES, raw[:500]
    assert isinstance(inner.get("message"), str), raw[:500]


def sse_events(raw: bytes) -> list[tuple[bytes, bytes]]:
    """(event name, data) of each frame of an SSE body."""
    events = []
    for frame in raw.split(b"\n\n"):
        name, data = b"", b""
        for line in frame.splitlines():
            if line.startswith(b"event:"):
                name = line[6:].strip()
            elif line.startswith(b"data:"):
                data += line[5:].strip()
        if name or data:
            events.append((name, data))
    return events


def assert_well_ended_stream(raw: bytes) -> None:
    events = sse_events(raw)
    assert events, f"an empty stream: {raw[:300]!r}"
    for _, data in events:
        orjson.loads(data)  # every event's data is JSON
    name, data = events[-1]
    assert name in (b"message_stop", b"error"), f"the stream ends with {name!r}: {raw[-500:]!r}"
    if name == b"error":
        assert_anthropic_error(data)


def check_case(live, case: HttpCase) -> int:
    """Send one case and check every invariant; the answer's status."""
    anthropic = live.fakes["an"]
    anthropic.unparseable = 0
    live.fakes["oa"].requests.clear()
    status, content_type, body = exchange(live.port, case)
    assert status < 500, f"{status}: {body[:500]!r}"
    if case.method != b"HEAD":  # a HEAD answer has no body to check
        if not 200 <= status < 300:
            assert_anthropic_error(body)
        elif content_type.startswith("text/event-stream"):
            assert_well_ended_stream(body)
        else:
            assert isinstance(orjson.loads(body), dict), body[:500]
    assert not (anthropic.unparseable and json_object(case.body) is not None), \
        "a JSON object reached the Anthropic upstream unparseable"
    tracebacks = [line for line in live.logs.take() if "Traceback" in line]
    assert not tracebacks, tracebacks[0][:4000]
    assert live.thread.is_alive() and live.loop.is_running(), "the server's event loop stopped"
    return status


def assert_serving(live) -> None:
    health = httpx.get(live.base_url + "/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    ok = httpx.post(live.base_url + "/v1/messages", timeout=10,
                    json={"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200, ok.text


def test_the_log_check_sees_tracebacks(live):
    """The 'no traceback' invariant is not vacuous: both kinds of log line are seen."""
    live.logs.take()
    try:
        raise ValueError("a test exception")
    except ValueError as exc:
        logger.opt(exception=exc).debug("through loguru")
        logging.getLogger("sanic.error").exception("through logging")
    assert sum("Traceback" in line for line in live.logs.take()) == 2


@pytest.mark.parametrize("chunk,examples", CHUNKS, ids=[f"run{i}" for i, _ in CHUNKS])
def test_generated_requests_keep_the_invariants(live, chunk, examples, capsys):
    statuses: Counter[int] = Counter()

    @seed(chunk)
    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=SLOW_IS_FINE)
    @given(case=http_cases)
    def one_case(case):
        statuses[check_case(live, case)] += 1

    started = time.monotonic()
    one_case()
    elapsed = time.monotonic() - started
    cases = sum(statuses.values())
    assert cases >= examples
    # not vacuous: valid requests are served, broken ones refused, unknown paths and methods named
    assert statuses[200] >= examples // 20 and statuses[400] and statuses[404] and statuses[405], statuses
    assert_serving(live)
    with capsys.disabled():
        print(f"\nfuzz run {chunk}: {cases} cases in {elapsed:.1f} s; status counts {dict(sorted(statuses.items()))}")


# Bugs this suite found (docs/reliability.md, "Fuzzing"), each minimal input kept as a regression test.

def test_a_method_that_is_not_utf8_gets_a_4xx(live):
    check_case(live, HttpCase(b"\x80", b"/v1/messages", (), b""))


def nested_list(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


ONE_MESSAGE = b'"max_tokens":5,"messages":[{"role":"user","content":"a"}]'
TOO_DEEP_TO_ENCODE = {  # the smallest depth that failed (a 500) at each place that re-encodes the request
    "tool_use input, OpenAI format": b'{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a"},'
    b'{"role":"assistant","content":[{"type":"tool_use","id":"t","name":"n","input":' + nested_list(255)
    + b'}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"t"}]}]}',
    "tool schema, OpenAI format": b'{"model":"gpt-4o","tools":[{"name":"t","input_schema":{"type":"object","x":'
    + nested_list(251) + b"}}]," + ONE_MESSAGE + b"}",
    "metadata, Anthropic format with middleware": b'{"model":"mw-x","metadata":{"x":' + nested_list(253) + b"},"
    + ONE_MESSAGE + b"}",
}


@pytest.mark.parametrize("where", list(TOO_DEEP_TO_ENCODE))
def test_nesting_the_gateway_decodes_but_cannot_encode_is_a_400(live, where):
    check_case(live, HttpCase(b"POST", b"/v1/messages", (), TOO_DEEP_TO_ENCODE[where]))

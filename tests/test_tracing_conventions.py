"""The spans follow the OpenTelemetry conventions (HTTP server and client, GenAI), checked through
the SDK's in-memory exporter (the gateway's records built into SDK spans when the request ends):
the server span with the HTTP and GenAI attributes (for a stream, ended when the stream ends, with
its usage), one CLIENT span per upstream exchange (retries and key failover included), W3C
trace-context honoured, no prompt or completion text unless ``telemetry.capture_content``."""
from __future__ import annotations

import json
import time

import anthropic
import httpx
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import LiveGateway, free_port, mid_stream

KEYS = ["sk-trace-canary-AAAA1111", "sk-trace-canary-BBBB2222"]
USER = [{"role": "user", "content": "hi there"}]


def spec(extra: str = "", base: str | None = None):
    def make(u):
        url = base or u["oa"]
        return f"""
version: 1
server: {{max_retries: 1, retry_backoff: 0.01}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{url}", api_keys: [{KEYS[0]}, {KEYS[1]}]}}
{extra}"""
    return make


def traced(tmp_path, make_spec, fake=None):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    gw = LiveGateway(make_spec, {"oa": fake or FakeOpenAI()}, tmp_path, tracer_provider=tp)
    return gw, exporter


def client(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=15)


def by_name(spans, name):
    return [s for s in spans if s.name == name]


def all_text(spans) -> str:
    """Every attribute and event of every span, as text."""
    return " ".join(str(dict(s.attributes)) + str([(e.name, dict(e.attributes)) for e in s.events]) for s in spans)


def test_server_and_client_spans_carry_the_conventions(tmp_path):
    fake = FakeOpenAI()
    gw, exporter = traced(tmp_path, spec(), fake)
    with gw:
        client(gw).messages.create(model="oa:gpt-4o", max_tokens=30, messages=USER)
        port = httpx.URL(fake.base_url).port
    spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /v1/messages")
    a = server.attributes
    assert server.kind is SpanKind.SERVER and server.parent is None
    assert (a["http.request.method"], a["url.path"], a["http.route"], a["url.scheme"]) == \
        ("POST", "/v1/messages", "/v1/messages", "http")
    assert a["http.response.status_code"] == 200 and "error.type" not in a
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "oa"
    assert a["gen_ai.request.model"] == "oa:gpt-4o"  # what the client asked for
    assert a["vandamme.model"] == "gpt-4o"  # where it went
    assert a["gen_ai.response.model"] == "gpt-4o"
    assert a["gen_ai.request.max_tokens"] == 30
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 7)
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("end_turn",)
    assert "gen_ai.request.stream" not in a
    [attempt] = by_name(spans, "upstream.attempt")
    b = attempt.attributes
    assert attempt.kind is SpanKind.CLIENT
    assert (b["server.address"], b["server.port"], b["http.request.method"]) == ("127.0.0.1", port, "POST")
    assert (b["http.response.status_code"], b["vandamme.attempt"], b["vandamme.outcome"]) == (200, 1, "ok")
    assert (b["gen_ai.operation.name"], b["gen_ai.provider.name"], b["gen_ai.request.model"]) == \
        ("chat", "oa", "gpt-4o")
    assert "error.type" not in b and "http.request.resend_count" not in b
    assert attempt.status.status_code is StatusCode.UNSET
    # parent links: server -> stages -> (provider stages under dispatch) -> upstream -> attempt
    ids = {s.context.span_id: s for s in spans}
    assert {s.context.trace_id for s in spans} == {server.context.trace_id}
    for s in spans:
        if s is not server:
            assert s.parent.span_id in ids
    assert ids[attempt.parent.span_id].name == "upstream"
    assert ids[ids[attempt.parent.span_id].parent.span_id].name == "dispatch"
    # no prompt or completion text by default
    text = all_text(spans)
    assert "hi there" not in text and "gen_ai.input.messages" not in text and "gen_ai.output.messages" not in text


def test_count_tokens_is_traced_too(tmp_path):
    gw, exporter = traced(tmp_path, spec())
    with gw:
        r = httpx.post(gw.base_url + "/v1/messages/count_tokens", timeout=15,
                       json={"model": "gpt-4o", "messages": USER})
    assert r.status_code == 200
    [server] = by_name(exporter.get_finished_spans(), "POST /v1/messages/count_tokens")
    a = server.attributes
    assert (a["http.route"], a["http.response.status_code"], a["gen_ai.provider.name"]) == \
        ("/v1/messages/count_tokens", 200, "oa")
    assert "gen_ai.operation.name" not in a  # not a chat


def test_a_stream_span_ends_with_the_stream_and_has_its_usage(tmp_path):
    fake = FakeOpenAI()
    fake.enqueue(Reply(text="one two three four five six", delay=0.02))
    gw, exporter = traced(tmp_path, spec(), fake)
    with gw:
        with client(gw).messages.stream(model="gpt-4o", max_tokens=30, messages=USER) as stream:
            final = stream.get_final_message()
    assert final.usage.output_tokens == 7
    spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /v1/messages")
    [attempt] = by_name(spans, "upstream.attempt")
    a = server.attributes
    assert a["http.response.status_code"] == 200 and a["gen_ai.request.stream"] is True
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (12, 7)  # known at the end only
    assert tuple(a["gen_ai.response.finish_reasons"]) == ("end_turn",)
    # the attempt span ends with the answer's head; the server span only after the last event
    assert server.end_time > attempt.end_time


def test_a_client_that_goes_away_mid_stream_still_ends_its_trace(tmp_path):
    fake = FakeOpenAI()
    fake.enqueue(Reply(text="word " * 200, delay=0.05))  # ~10 s of stream if nobody left
    gw, exporter = traced(tmp_path, spec(), fake)
    with gw:
        with mid_stream(gw.base_url, "gpt-4o", USER):
            assert not by_name(exporter.get_finished_spans(), "POST /v1/messages")  # still streaming
        # the client closed its connection: the server span ends with the stream, not with the upstream's
        for _ in range(100):  # bounded: 5 s
            if by_name(exporter.get_finished_spans(), "POST /v1/messages"):
                break
            time.sleep(0.05)
        spans = exporter.get_finished_spans()
    [server] = by_name(spans, "POST /v1/messages")
    a = server.attributes
    assert a["http.response.status_code"] == 200  # the head had gone out
    assert a["error.type"] == "client_closed" and a["gen_ai.request.stream"] is True
    assert server.end_time - server.start_time < 5e9  # ended when the client left, not ~10 s later
    # every span of the request is in the trace, each under the server span's trace
    assert {s.context.trace_id for s in spans} == {server.context.trace_id}
    assert by_name(spans, "upstream.attempt") and by_name(spans, "dispatch")


def test_every_upstream_exchange_is_a_client_span(tmp_path):
    """A 503 retried on the same key, then a 429 that moves to the next key, then 200."""
    fake = FakeOpenAI()
    fake.enqueue(Reply(status=503, error_message="busy"), Reply(status=429, error_message="slow down"), Reply())
    gw, exporter = traced(tmp_path, spec(), fake)
    with gw:
        client(gw).messages.create(model="gpt-4o", max_tokens=30, messages=USER)
    spans = exporter.get_finished_spans()
    attempts = sorted(by_name(spans, "upstream.attempt"), key=lambda s: s.start_time)
    got = [(s.attributes["vandamme.attempt"], s.attributes.get("http.request.resend_count"),
            s.attributes["http.response.status_code"], s.attributes.get("error.type"),
            s.attributes["vandamme.outcome"]) for s in attempts]
    assert got == [(1, None, 503, "503", "error"), (2, 1, 429, "429", "error"), (3, 2, 200, None, "ok")]
    keys = [s.attributes["vandamme.key_index"] for s in attempts]
    assert keys[0] == keys[1] != keys[2]  # the retry on the same key, then the next key
    assert [s.status.status_code for s in attempts] == [StatusCode.ERROR, StatusCode.ERROR, StatusCode.UNSET]
    assert len({s.parent.span_id for s in attempts}) == 1  # all under the one `upstream` stage span
    [server] = by_name(spans, "POST /v1/messages")
    assert server.attributes["http.response.status_code"] == 200
    for key in KEYS:
        assert key not in all_text(spans)


def test_a_connection_failure(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    gw, exporter = traced(tmp_path, spec(base=closed))
    with gw:
        r = httpx.post(gw.base_url + "/v1/messages", timeout=15,
                       json={"model": "gpt-4o", "max_tokens": 5, "messages": USER})
    assert r.status_code == 502
    spans = exporter.get_finished_spans()
    attempts = by_name(spans, "upstream.attempt")
    assert attempts and all(s.attributes["error.type"] == "connection_error" for s in attempts)
    assert all("http.response.status_code" not in s.attributes for s in attempts)
    [server] = by_name(spans, "POST /v1/messages")
    assert server.attributes["http.response.status_code"] == 502
    assert server.attributes["error.type"] == "api_error"
    assert server.status.status_code is StatusCode.ERROR
    stage = next(s for s in spans if s.name == "upstream")
    assert stage.status.status_code is StatusCode.ERROR
    assert [e.name for e in stage.events] == ["exception"]
    assert stage.events[0].attributes["exception.type"] == "GatewayError"


def test_an_incoming_traceparent_is_honoured(tmp_path):
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    gw, exporter = traced(tmp_path, spec())
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": USER}
    with gw:
        sampled = httpx.post(gw.base_url + "/v1/messages", json=body, timeout=15,
                             headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "vendor=x"})
        after_sampled = len(exporter.get_finished_spans())
        unsampled = httpx.post(gw.base_url + "/v1/messages", json=body, timeout=15,
                               headers={"traceparent": f"00-{'a' * 32}-{'b' * 16}-00"})
        after_unsampled = len(exporter.get_finished_spans())
        invalid = httpx.post(gw.base_url + "/v1/messages", json=body, timeout=15,
                             headers={"traceparent": "00-zz-not-a-traceparent"})
    assert sampled.status_code == unsampled.status_code == invalid.status_code == 200
    spans = exporter.get_finished_spans()
    first = spans[:after_sampled]
    assert {format(s.context.trace_id, "032x") for s in first} == {trace_id}
    [server] = by_name(first, "POST /v1/messages")
    assert format(server.parent.span_id, "016x") == parent_id and server.parent.is_remote
    assert all(s.context.trace_state.get("vendor") == "x" for s in first)
    assert after_unsampled == after_sampled  # the caller did not sample it: nothing recorded
    rest = spans[after_unsampled:]
    [root] = by_name(rest, "POST /v1/messages")
    assert root.parent is None and format(root.context.trace_id, "032x") not in (trace_id, "a" * 32)


def test_content_is_captured_only_when_the_spec_opts_in(tmp_path):
    fake = FakeOpenAI()
    fake.enqueue(Reply(text="the answer"), Reply(text="streamed answer"))
    extra = "telemetry: {capture_content: true}\n"
    gw, exporter = traced(tmp_path, spec(extra), fake)
    secret_prompt = f"my key is {KEYS[0]}, keep it"
    with gw:
        c = client(gw)
        c.messages.create(model="gpt-4o", max_tokens=30, system="Be brief.",
                          messages=[{"role": "user", "content": secret_prompt}])
        with c.messages.stream(model="gpt-4o", max_tokens=30, messages=USER) as stream:
            stream.get_final_message()
    servers = sorted(by_name(exporter.get_finished_spans(), "POST /v1/messages"), key=lambda s: s.start_time)
    a, b = (s.attributes for s in servers)
    assert json.loads(a["gen_ai.system_instructions"]) == [{"type": "text", "content": "Be brief."}]
    inputs = json.loads(a["gen_ai.input.messages"])
    assert inputs == [{"role": "user", "parts": [{"type": "text", "content": "my key is [REDACTED], keep it"}]}]
    outputs = json.loads(a["gen_ai.output.messages"])
    assert outputs == [{"role": "assistant", "parts": [{"type": "text", "content": "the answer"}],
                        "finish_reason": "stop"}]
    assert json.loads(b["gen_ai.input.messages"])[0]["parts"][0]["content"] == "hi there"
    assert json.loads(b["gen_ai.output.messages"])[0]["parts"] == [{"type": "text", "content": "streamed answer"}]
    assert KEYS[0] not in all_text(exporter.get_finished_spans())

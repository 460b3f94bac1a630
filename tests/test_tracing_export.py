"""The production export path: the gateway records plain values, an exporter process of its own
encodes them to OTLP protobuf and posts them to the endpoint (a local OTLP/HTTP sink on
127.0.0.1, decoded here with the official protobuf classes). The spans that arrive have
consistent ids and parent links, the conventions' attributes, the incoming trace context, and
no key; the exporter's encoding gives the same spans as the SDK path; the exporter process goes
away with the gateway."""
from __future__ import annotations

import json
import marshal

import anthropic
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from vandamme.engine.compiler import settings_from
from vandamme.engine.span_export import Encoder, SpanExport, span_count, walk
from vandamme.engine.telemetry import readable_spans, tracer_provider_for
from fakes.openai_upstream import FakeOpenAI, Reply
from fakes.otlp_sink import OTLPSink
from harness import Background, LiveGateway, free_port
from test_metrics_workers import upstreams  # noqa: F401 - the fixture
from vandamme.tracing import NAMES, RUN_TIMES, STAGE_BITS

KEY = "sk-export-canary-ZZZZ9999"
USER = [{"role": "user", "content": "hello exporter"}]
BODY = {"model": "gpt-4o", "max_tokens": 20, "messages": USER}


def spec(extra: str = "", server: str = "max_retries: 0"):
    return lambda u: f"""
version: 1
server: {{{server}}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [{KEY}]}}
{extra}"""


def value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [value(x) for x in v.array_value.values]
    return getattr(v, kind) if kind else None


def spans_of(sink: OTLPSink) -> list[dict]:
    out = []
    for req in sink.exports:
        for rs in req.resource_spans:
            resource = {a.key: value(a.value) for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    out.append({"name": s.name, "kind": s.kind, "trace": s.trace_id.hex(), "id": s.span_id.hex(),
                                "parent": s.parent_span_id.hex(), "start": s.start_time_unix_nano,
                                "end": s.end_time_unix_nano, "status": s.status.code, "flags": s.flags,
                                "attrs": {a.key: value(a.value) for a in s.attributes},
                                "events": [e.name for e in s.events], "resource": resource,
                                "scope": ss.scope.name, "state": s.trace_state})
    return out


@pytest.fixture
def sink():
    s = OTLPSink()
    with Background(s):
        yield s


def export_for(sink, **telemetry) -> SpanExport:
    export = tracer_provider_for(settings_from({"telemetry": {"service_name": "vdm-export",
                                                              "otlp_endpoint": sink.base_url, **telemetry}}),
                                 environ={})
    assert isinstance(export, SpanExport)
    return export


def test_spans_reach_the_endpoint_from_the_exporter_process(tmp_path, sink):
    export = export_for(sink)
    fake = FakeOpenAI()
    fake.enqueue(Reply(), Reply(text="a streamed answer"), Reply(status=401, error_message=f"Incorrect API key: {KEY}"))
    try:
        with LiveGateway(spec(), {"oa": fake}, tmp_path, tracer_provider=export) as gw:
            c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=15)
            c.messages.create(**BODY)
            with c.messages.stream(**BODY) as stream:
                stream.get_final_message()
            r = httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15)
            assert r.status_code == 401 and "[REDACTED]" in r.text
            assert export.force_flush(10_000)
            proc = export._proc
            assert proc is not None and proc.poll() is None  # one exporter process, running
    finally:
        export.shutdown()
    assert proc.wait(10) == 0  # it went away with the gateway's pipe
    spans = spans_of(sink)
    assert {s["resource"]["service.name"] for s in spans} == {"vdm-export"}
    assert {s["scope"] for s in spans} == {"vandamme"}
    traces = {}
    for s in spans:
        traces.setdefault(s["trace"], []).append(s)
    assert len(traces) == 3
    for trace in traces.values():
        ids = {s["id"] for s in trace}
        assert len(ids) == len(trace)  # every span its own id
        [server] = [s for s in trace if s["kind"] == Span.SPAN_KIND_SERVER]
        assert server["parent"] == "" and server["name"] == "POST /v1/messages"
        for s in trace:
            assert s["start"] <= s["end"]
            if s is not server:
                assert s["parent"] in ids  # parent links inside the trace
        stages = [s for s in trace if "vandamme.stage" in s["attrs"]]
        assert {"parse", "validate", "resolve_target", "dispatch", "anthropic_to_openai", "upstream"} <= \
            {s["name"] for s in stages}
        by_id = {s["id"]: s for s in trace}
        [attempt] = [s for s in trace if s["name"] == "upstream.attempt"]
        assert attempt["kind"] == Span.SPAN_KIND_CLIENT and by_id[attempt["parent"]]["name"] == "upstream"
        assert attempt["attrs"]["server.address"] == "127.0.0.1" and attempt["attrs"]["vandamme.attempt"] == 1
    servers = sorted((s for s in spans if s["kind"] == Span.SPAN_KIND_SERVER), key=lambda s: s["start"])
    ok, streamed, refused = (s["attrs"] for s in servers)
    assert ok["http.response.status_code"] == 200 and ok["gen_ai.operation.name"] == "chat"
    assert (ok["gen_ai.usage.input_tokens"], ok["gen_ai.usage.output_tokens"]) == (12, 7)
    assert ok["gen_ai.response.finish_reasons"] == ["end_turn"] and ok["gen_ai.request.max_tokens"] == 20
    assert streamed["gen_ai.request.stream"] is True and streamed["gen_ai.usage.output_tokens"] == 7
    assert refused["http.response.status_code"] == 401 and refused["error.type"] == "authentication_error"
    [failed] = [s for s in spans if s["name"] == "upstream.attempt" and s["attrs"].get("error.type")]
    assert failed["attrs"]["error.type"] == "401" and failed["status"] == 2  # STATUS_CODE_ERROR
    assert "exception" in {e for s in spans for e in s["events"]}
    raw = b"".join(sink.payloads)
    assert KEY.encode() not in raw and b"hello exporter" not in raw  # no key, no prompt


def test_trace_context_and_sampling_through_the_exporter(tmp_path, sink):
    export = export_for(sink, sample_ratio=0.0)
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    try:
        with LiveGateway(spec(), {"oa": FakeOpenAI()}, tmp_path, tracer_provider=export) as gw:
            for _ in range(3):  # ratio 0: not traced
                assert httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15).status_code == 200
            r = httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15,  # a sampled caller: traced
                           headers={"traceparent": f"00-{trace_id}-{parent_id}-01", "tracestate": "k=v"})
            assert r.status_code == 200
            assert export.force_flush(10_000)
    finally:
        export.shutdown()
    spans = spans_of(sink)
    assert spans and {s["trace"] for s in spans} == {trace_id}
    [server] = [s for s in spans if s["kind"] == Span.SPAN_KIND_SERVER]
    assert server["parent"] == parent_id and server["flags"] & 0x300 == 0x300  # the parent is remote
    assert {s["state"] for s in spans} == {"k=v"}


def test_content_is_exported_only_when_opted_in(tmp_path, sink):
    export = export_for(sink)
    try:
        with LiveGateway(spec("telemetry: {capture_content: true}\n"), {"oa": FakeOpenAI()}, tmp_path,
                         tracer_provider=export) as gw:
            assert httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15).status_code == 200
            assert export.force_flush(10_000)
    finally:
        export.shutdown()
    [server] = [s for s in spans_of(sink) if s["kind"] == Span.SPAN_KIND_SERVER]
    assert json.loads(server["attrs"]["gen_ai.input.messages"])[0]["parts"][0]["content"] == "hello exporter"
    assert json.loads(server["attrs"]["gen_ai.output.messages"])[0]["role"] == "assistant"


def test_the_exporter_encodes_what_the_sdk_path_builds(tmp_path):
    """The hand-written OTLP encoder and the SDK ReadableSpans agree on every span of a record."""
    records = []
    export = SpanExport("http://127.0.0.1:9/v1/traces", {"service.name": "x"})
    export.submit = records.append  # keep the records instead of sending them
    fake = FakeOpenAI()
    fake.enqueue(Reply(status=503, error_message="busy"), Reply())
    try:
        with LiveGateway(spec(server="max_retries: 1, retry_backoff: 0.01"), {"oa": fake}, tmp_path,
                         tracer_provider=export) as gw:
            assert httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15,
                              headers={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"}).status_code == 200
    finally:
        export._closed = True
    [record] = records
    record = marshal.loads(marshal.dumps(record))  # what crosses the pipe
    ids = [bytes([i + 1]) * 8 for i in range(64)]
    encoder = Encoder({"service.name": "x"})
    encoder.names.extend(NAMES)
    out: list[bytes] = []
    encoder.spans(record, out, ids=lambda n: ids[:n])
    proto = ExportTraceServiceRequest.FromString(encoder.request(out)).resource_spans[0].scope_spans[0].spans
    sdk = readable_spans(record, None, None)
    assert len(proto) == len(sdk) >= 12
    sdk_id = {s.context.span_id: i for i, s in enumerate(sdk)}
    for p, s in zip(proto, sdk):
        assert p.name == s.name
        assert p.kind - 1 == s.kind.value  # OTLP numbers SpanKind one higher than the API enum
        assert (p.start_time_unix_nano, p.end_time_unix_nano) == (s.start_time, s.end_time)
        assert {a.key: value(a.value) for a in p.attributes} == {k: (list(v) if isinstance(v, tuple) else v)
                                                                 for k, v in s.attributes.items()}
        assert p.status.code == s.status.status_code.value and [e.name for e in p.events] == [e.name for e in s.events]
        assert p.trace_id.hex() == "1" * 32
        if s.parent.is_remote:
            assert p.parent_span_id.hex() == "2" * 16
        else:
            assert p.parent_span_id == ids[sdk_id[s.parent.span_id]]


def test_run_records_give_one_span_per_stage_end_to_end(tmp_path):
    """A run record holds its stage boundaries itself (vandamme.tracing, RUN_TIMES on): every
    stage of a run gets its span, in order, each ending where the next begins, inside the server
    span; a failing stage carries the error."""
    records = []
    export = SpanExport("http://127.0.0.1:9/v1/traces", {"service.name": "x"})
    export.submit = records.append
    fake = FakeOpenAI()
    fake.enqueue(Reply(), Reply(status=401, error_message="no"))
    try:
        with LiveGateway(spec(), {"oa": fake}, tmp_path, tracer_provider=export) as gw:
            for _ in range(2):
                httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=15)
    finally:
        export._closed = True
    assert len(records) == 2
    for record in records:
        record = marshal.loads(marshal.dumps(record))
        runs, spans = record[5], record[6]
        assert len(runs) == 2  # the front pipeline, then the provider's
        server = spans[0]
        walked = list(walk(record, list(range(span_count(record))), None, NAMES))
        assert len(walked) == span_count(record) == sum(len(r) - RUN_TIMES - 1 for r in runs) + len(spans)
        at = 0
        for run in runs:
            times = run[RUN_TIMES:]
            assert list(times) == sorted(times) and server[2] <= times[0] and times[-1] <= server[3]
            stages = walked[at:at + len(times) - 1]
            at += len(times) - 1
            assert [s[5] for s in stages] == list(NAMES[run[0]][:len(times) - 1])
            for a, b in zip(stages, stages[1:]):
                assert a[3] == b[2]  # a stage's span ends where the next one's starts
        front, provider = runs
        assert len(front) - RUN_TIMES - 1 == len(NAMES[front[0]])  # every front stage ran
        assert provider[1] >> STAGE_BITS == 0 and NAMES[front[0]][provider[1] & ((1 << STAGE_BITS) - 1)] == "dispatch"
    failed = records[1][5][1]
    [(j, err)] = failed[4].items()
    assert NAMES[failed[0]][j] == "upstream" and err[0] == "GatewayError"


def test_with_two_workers_each_exports_the_spans_of_the_requests_it_served(tmp_path, sink, upstreams):
    """`vandamme run --workers 2` with an OTLP endpoint: each worker has its exporter process and
    names itself in the resource (service.instance.id); every request's trace arrives whole, from
    the worker that served it, by the time the server has stopped."""
    from test_metrics_workers import Served, write_spec

    port = free_port()
    write_spec(tmp_path / "specs", port, upstreams)
    with (tmp_path / "specs" / "gateway.yaml").open("a") as f:
        f.write(f'telemetry: {{otlp_endpoint: "{sink.base_url}", service_name: vdm-workers}}\n')
    sent: list[str] = []
    with Served(tmp_path / "specs", port, 2, tmp_path) as served:
        for _ in range(10):  # bounded: until both workers have answered (normally the first round)
            for i in range(12):
                # a new connection per request, so the kernel hands them to either worker
                r = httpx.post(served.base_url + "/v1/messages", timeout=15,
                               headers={"x-api-key": "k", "connection": "close"},
                               json={**BODY, "model": "oa:gpt-4o" if i % 2 else "an:claude-x"})
                assert r.status_code == 200, r.text
                sent.append(r.headers["request-id"])
            if len({rid[4:12] for rid in sent}) == 2:  # request ids carry their worker's prefix
                break
    assert served.proc.returncode == 0, served.output
    assert len({rid[4:12] for rid in sent}) == 2, "every request landed on one worker"
    spans = spans_of(sink)  # the exporters flush when their worker stops
    servers = {s["attrs"]["vandamme.request_id"]: s for s in spans if s["kind"] == Span.SPAN_KIND_SERVER}
    assert sorted(servers) == sorted(sent), (sorted(set(sent) - set(servers)), served.output[-3000:])
    instance_of = {}  # worker prefix -> the instance its spans name
    for rid, server in servers.items():
        res = server["resource"]
        assert res["service.name"] == "vdm-workers" and res["service.version"]
        assert instance_of.setdefault(rid[4:12], res["service.instance.id"]) == res["service.instance.id"]
        trace = [s for s in spans if s["trace"] == server["trace"]]
        assert {s["resource"]["service.instance.id"] for s in trace} == {res["service.instance.id"]}
        assert {"parse", "dispatch", "upstream", "upstream.attempt"} <= {s["name"] for s in trace}
    assert len(set(instance_of.values())) == 2  # one instance per worker

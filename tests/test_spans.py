"""One OpenTelemetry span per stage, checked with the SDK's in-memory exporter."""
import anthropic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway

SPEC = lambda urls: f"""
version: 1
default_provider: anthropic
providers:
  anthropic: {{format: anthropic, base_url: "{urls['a']}", api_keys: [k-123456789012]}}
"""


def test_one_span_per_stage_with_attributes(tmp_path):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with LiveGateway(SPEC, {"a": FakeAnthropic()}, tmp_path, tracer_provider=tp) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        c.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        expected = gw.gateway.front.stage_names + gw.gateway.providers["anthropic"].pipeline.stage_names
    spans = exporter.get_finished_spans()
    stage_spans = [s for s in spans if "vandamme.stage" in s.attributes]
    assert sorted(s.name for s in stage_spans) == sorted(expected)
    assert {"parse", "validate", "resolve_target", "dispatch", "select_key", "render_headers",
            "passthrough_body", "upstream"} <= {s.name for s in stage_spans}
    for s in stage_spans:
        assert s.attributes["vandamme.stage"] == s.name
    provider_stages = {"resolve_target", "dispatch"} | set(gw.gateway.providers["anthropic"].pipeline.stage_names)
    for s in stage_spans:
        assert s.attributes["vandamme.request_id"].startswith("req_")
        if s.name in provider_stages:  # the target is known from resolve_target on
            assert s.attributes["vandamme.provider"] == "anthropic"
            assert s.attributes["gen_ai.provider.name"] == "anthropic"
            assert s.attributes["vandamme.model"] == "claude-x"
            assert s.attributes["gen_ai.request.model"] == "claude-x"
        assert s.start_time <= s.end_time
    # the provider's stages are children of `dispatch`
    dispatch = next(s for s in stage_spans if s.name == "dispatch")
    upstream = next(s for s in stage_spans if s.name == "upstream")
    assert upstream.parent.span_id == dispatch.context.span_id
    attempt = next(s for s in spans if s.name == "upstream.attempt")
    assert attempt.attributes["vandamme.outcome"] == "ok"
    assert attempt.kind is SpanKind.CLIENT and attempt.parent.span_id == upstream.context.span_id
    assert dispatch.start_time <= upstream.start_time <= attempt.start_time <= attempt.end_time \
        <= upstream.end_time <= dispatch.end_time
    # every span of the request is in one trace, each with an id of its own
    assert len({s.context.trace_id for s in spans}) == 1
    assert len({s.context.span_id for s in spans}) == len(spans)
    # secrets never land in spans
    for s in spans:
        assert "k-123456789012" not in str(dict(s.attributes))


def test_tracing_off_means_no_tracer(tmp_path):
    with LiveGateway(SPEC, {"a": FakeAnthropic()}, tmp_path) as gw:
        assert gw.gateway.tracer is None
        assert gw.gateway.front._run == gw.gateway.front._run_plain


def test_one_trace_per_request_under_a_server_span(tmp_path):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with LiveGateway(SPEC, {"a": FakeAnthropic()}, tmp_path, tracer_provider=tp) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        for _ in range(2):
            c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name == "POST /v1/messages"]
    assert len(roots) == 2 and all(s.parent is None for s in roots)
    assert roots[0].attributes["http.response.status_code"] == 200
    for root in roots:
        trace = [s for s in spans if s.context.trace_id == root.context.trace_id]
        assert {"parse", "validate", "resolve_target", "dispatch", "upstream"} <= {s.name for s in trace}
        parse = next(s for s in trace if s.name == "parse")
        assert parse.parent.span_id == root.context.span_id


def test_sample_ratio_zero_records_nothing(tmp_path):
    """The SDK provider's sampler decides per request; at ratio 0 nothing is recorded."""
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    tp = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.0)))
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with LiveGateway(SPEC, {"a": FakeAnthropic()}, tmp_path, tracer_provider=tp) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        for _ in range(3):
            assert c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]).content
    assert exporter.get_finished_spans() == ()
    tp.shutdown()


def test_sample_ratio_from_the_spec(tmp_path):
    from vandamme.engine.compiler import settings_from
    from vandamme.engine.telemetry import tracer_provider_for
    export = tracer_provider_for(settings_from({"telemetry": {"otlp_endpoint": "http://127.0.0.1:9",
                                                              "sample_ratio": 0.25}}), environ={})
    assert (export.ratio, export.parent_based) == (0.25, True)
    export.shutdown()
    export = tracer_provider_for(settings_from({"telemetry": {"otlp_endpoint": "http://127.0.0.1:9"}}),
                                 environ={"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
    assert (export.ratio, export.parent_based) == (0.5, False)
    export.shutdown()

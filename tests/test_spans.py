"""One OpenTelemetry span per stage, checked with the SDK's in-memory exporter."""
import anthropic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

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
    for s in stage_spans:
        if s.name not in ("parse", "validate"):
            assert s.attributes["vandamme.provider"] == "anthropic"
            assert s.attributes["vandamme.model"] == "claude-x"
    # the provider's stages are children of `dispatch`
    dispatch = next(s for s in stage_spans if s.name == "dispatch")
    upstream = next(s for s in stage_spans if s.name == "upstream")
    assert upstream.parent.span_id == dispatch.context.span_id
    attempt = next(s for s in spans if s.name == "upstream.attempt")
    assert attempt.attributes["vandamme.outcome"] == "ok"
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
    from engine.compiler import settings_from
    from engine.telemetry import tracer_provider_for
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    tp = tracer_provider_for(settings_from({"telemetry": {"otlp_endpoint": "http://127.0.0.1:9",
                                                          "sample_ratio": 0.0}}), environ={})
    assert isinstance(tp.sampler, ParentBased)
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    with LiveGateway(SPEC, {"a": FakeAnthropic()}, tmp_path, tracer_provider=tp) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        assert c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}]).content
    assert exporter.get_finished_spans() == ()
    tp.shutdown()

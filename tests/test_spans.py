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

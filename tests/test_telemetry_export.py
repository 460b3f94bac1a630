"""With an OTLP endpoint configured, spans really leave the process: a local OTLP/HTTP sink
(an aiohttp server on 127.0.0.1) receives them."""

import anthropic

from vandamme.engine.compiler import settings_from
from vandamme.engine.telemetry import tracer_provider_for
from fakes.anthropic_upstream import FakeAnthropic
from fakes.otlp_sink import OTLPSink
from harness import Background, LiveGateway


def test_spans_are_exported_over_otlp_http(tmp_path):
    sink = OTLPSink()
    with Background(sink):
        settings = settings_from({"telemetry": {"service_name": "vdm-test", "otlp_endpoint": sink.base_url}})
        tp = tracer_provider_for(settings, environ={})
        assert tp is not None
        spec = lambda u: f"""
version: 1
default_provider: a
providers:
  a: {{format: anthropic, base_url: "{u['a']}", api_keys: [k-secret-123456789]}}
"""
        with LiveGateway(spec, {"a": FakeAnthropic()}, tmp_path, tracer_provider=tp) as gw:
            c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
            c.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        assert tp.force_flush(10_000)
        names = {name for _, name, _ in sink.spans}
        assert {"parse", "validate", "resolve_target", "dispatch", "upstream"} <= names
        assert {svc for svc, _, _ in sink.spans} == {"vdm-test"}
        assert all("k-secret" not in str(attrs) for _, _, attrs in sink.spans)
        tp.shutdown()


def test_no_endpoint_means_no_tracing():
    assert tracer_provider_for(settings_from({}), environ={}) is None
    tp = tracer_provider_for(settings_from({}), environ={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"})
    assert tp is not None
    tp.shutdown()


def test_metrics_export_modules_are_imported_with_the_app(tmp_path):
    """With an OTLP endpoint, the metrics export's modules (the SDK, the OTLP/HTTP exporter and the
    requests stack it makes its session with) are imported while the app is built, before the
    server freezes its startup heap (vandamme.engine.server) — not by the worker once it serves;
    without one, none of them is imported. (A fresh interpreter: this one has them already.)"""
    import subprocess
    import sys

    probe = """
import sys
from vandamme.engine.compiler import settings_from
from vandamme.engine.metrics import preload_otlp
mods = ("opentelemetry.exporter.otlp.proto.http.metric_exporter", "opentelemetry.sdk.metrics", "requests")
preload_otlp(settings_from({}), environ={})
assert not any(m in sys.modules for m in mods), [m for m in mods if m in sys.modules]
preload_otlp(settings_from({"telemetry": {"otlp_endpoint": "http://127.0.0.1:9"}}), environ={})
assert all(m in sys.modules for m in mods), [m for m in mods if m not in sys.modules]
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]

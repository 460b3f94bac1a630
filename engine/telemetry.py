"""OpenTelemetry: a TracerProvider with the OTLP/HTTP exporter when an endpoint is configured
(``telemetry.otlp_endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``); otherwise None, and the stage
runtime runs without span code. Each request is one trace: a server span named after the route
(``POST /v1/messages``), the stage spans inside it; ``telemetry.sample_ratio`` decides per request
whether it is recorded."""
from __future__ import annotations

import os

from .compiler import Settings


def tracer_provider_for(settings: Settings, environ=None):
    environ = os.environ if environ is None else environ
    endpoint = settings.otlp_endpoint or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    endpoint = endpoint.rstrip("/")
    if not endpoint.endswith("/v1/traces"):
        endpoint += "/v1/traces"
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    # None lets the SDK read OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG (default: always on).
    sampler = None if settings.sample_ratio is None else ParentBased(TraceIdRatioBased(settings.sample_ratio))
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                              sampler=sampler)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider

"""A local OTLP/HTTP collector on 127.0.0.1: receives the protobuf export requests that the
OpenTelemetry OTLP/HTTP exporters post to ``/v1/traces`` and ``/v1/metrics``."""
from __future__ import annotations

from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from .loopback import LoopbackServer


class OTLPSink(LoopbackServer):
    """``spans``: (service name, span name, attributes) of every span received; ``payloads``: the
    raw protobuf bodies, every byte that left the process (attributes, events, status, resource);
    ``exports``: the same, decoded."""

    def __init__(self):
        super().__init__()
        self.spans = []
        self.payloads: list[bytes] = []
        self.exports: list[ExportTraceServiceRequest] = []
        self.metric_exports: list[ExportMetricsServiceRequest] = []  # /v1/metrics, decoded
        self.metric_payloads: list[bytes] = []

    def routes(self, app):
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)

    async def _metrics(self, request):
        raw = await request.read()
        self.metric_payloads.append(raw)
        self.metric_exports.append(ExportMetricsServiceRequest.FromString(raw))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def metrics(self) -> list[tuple[dict, object]]:
        """(resource attributes, Metric protobuf) of every metric received, in arrival order."""
        out = []
        for req in self.metric_exports:
            for rm in req.resource_metrics:
                resource = {a.key: _any_value(a.value) for a in rm.resource.attributes}
                for sm in rm.scope_metrics:
                    out.extend((resource, m) for m in sm.metrics)
        return out

    async def _traces(self, request):
        raw = await request.read()
        req = ExportTraceServiceRequest.FromString(raw)
        self.payloads.append(raw)
        self.exports.append(req)
        for rs in req.resource_spans:
            service = {a.key: a.value.string_value for a in rs.resource.attributes}.get("service.name")
            for ss in rs.scope_spans:
                for span in ss.spans:
                    self.spans.append((service, span.name, {a.key: a.value for a in span.attributes}))
        return web.Response(body=b"", content_type="application/x-protobuf")

    def span_events(self) -> list[str]:
        """The name of every event of every span received."""
        return [event.name for req in self.exports for rs in req.resource_spans for ss in rs.scope_spans
                for span in ss.spans for event in span.events]


def _any_value(v):
    """An OTLP AnyValue as Python (string, bool, int, double)."""
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None

"""The `record_metrics` stage: hands each request to the gateway's metrics recorder.

It is the first stage of the front pipeline, so every request that reaches a pipeline is counted,
refused ones included. It does no measuring itself: it registers the request with the recorder,
whose ``started(ctx)`` keeps it among the requests in flight and appends the recorder's callback to
``ctx.on_finish``; the server's ``ctx.finish(status, error_type)`` then records the outcome once.

The recorder lives in the engine (``vandamme.engine.metrics``; transforms never import the engine) and is
attached to the stage when a server starts serving the compiled gateway (``Metrics.attach``). A
gateway compiled without a server (``vandamme graph``, ``explain``) has none, and the stage does
nothing.
"""
from __future__ import annotations

from typing import Any


class RecordMetrics:
    name = "record_metrics"
    __slots__ = ("recorder",)

    detail = "outcome recorded when the answer is complete (GET /metrics)"

    def __init__(self, recorder: Any = None):
        self.recorder = recorder  # an object with started(ctx); set by vandamme.engine.metrics.Metrics.attach

    async def run(self, ctx) -> None:
        recorder = self.recorder
        if recorder is not None:
            recorder.started(ctx)

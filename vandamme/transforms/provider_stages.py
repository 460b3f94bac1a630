"""Stages around the provider exchange: `dispatch` (primary target, then fallbacks),
`azure_deployment` (Azure OpenAI URL shape) and `estimate_tokens` (local count_tokens)."""
from __future__ import annotations

import re
from urllib.parse import quote

import orjson

from vandamme.kernel import BufferedResponse, recording
from vandamme.secrets import record_error

from .errors import GatewayError, invalid_request
from .request_stages import full_body
from .token_estimate import estimate_tokens

# Upstream answers that another target could do better on. A malformed request (400, 413, 422)
# fails the same way everywhere, so it is returned at once.
NO_FALLBACK_STATUSES = frozenset({400, 413, 422})


class Dispatch:
    """Runs the chosen provider's pipeline (the matched route's variant, with its middleware);
    when it fails (after its own retries and key failover) and nothing has been sent yet, the
    route's next fallback target is tried, in the other format if need be, starting again from
    the client's request (``ctx.start_attempt``). Each target tried is a span ``fallback.attempt``."""

    name = "dispatch"
    __slots__ = ("tracer",)

    detail = "primary target, then the route's fallbacks"

    def __init__(self, tracer=None):
        self.tracer = tracer

    async def run(self, ctx) -> None:
        targets = ctx.targets or [(ctx.provider, ctx.model)]
        last = len(targets) - 1
        for i, (provider, model) in enumerate(targets):
            ctx.start_attempt(i, provider, model)
            pipeline = provider.count_pipeline if ctx.endpoint == "count_tokens" else \
                provider.pipeline_for(ctx.route)
            try:
                if self.tracer is None or last == 0 or not recording():
                    await pipeline.run(ctx)
                else:
                    with self.tracer.start_as_current_span("fallback.attempt", record_exception=False,
                                                           set_status_on_exception=False) as span:
                        span.set_attributes({"vandamme.target": f"{provider.name}:{model}",
                                             "vandamme.target_index": i})
                        try:
                            await pipeline.run(ctx)
                        except BaseException as exc:
                            record_error(span, exc)
                            raise
                return
            except orjson.JSONEncodeError:
                # orjson encodes at most 255 levels of nesting; it decodes up to 1,024
                raise (invalid_request("request body nests too deeply to forward (more than 255 levels)")
                       if ctx.response is None else
                       GatewayError(502, "malformed upstream answer: nests too deeply to convert", "api_error")) from None
            except GatewayError as exc:
                if i == last or exc.status in NO_FALLBACK_STATUSES:
                    raise
                ctx.fallback_errors.append((provider.name, model, exc.status, exc.error_type))


# What an Azure deployment name can be (letters, digits, '-', '_', '.'; not only dots), so that a
# client's model string can never change the upstream path or query.
_DEPLOYMENT = re.compile(r"^(?!\.+$)[A-Za-z0-9._-]{1,64}$")


class AzureDeployment:
    """Azure OpenAI: /openai/deployments/{deployment}/chat/completions?api-version=...; the
    deployment is looked up by model name (the model name itself when not listed). A name that
    cannot be a deployment is a 400; the path segment is escaped all the same."""

    name = "azure_deployment"
    __slots__ = ("deployments",)

    def __init__(self, deployments: dict[str, str]):
        self.deployments = deployments

    async def run(self, ctx) -> None:
        deployment = self.deployments.get(ctx.model, ctx.model)
        if not _DEPLOYMENT.match(deployment):
            raise invalid_request(f"model: {deployment[:80]!r} cannot be an Azure deployment name "
                                  "(letters, digits, '-', '_' and '.', at most 64)")
        ctx.upstream_path = f"/openai/deployments/{quote(deployment, safe='')}/chat/completions"


class EstimateTokens:
    """count_tokens for OpenAI-format providers: a local estimate (no upstream call)."""

    name = "estimate_tokens"
    __slots__ = ()

    async def run(self, ctx) -> None:
        ctx.response = BufferedResponse(200, orjson.dumps({"input_tokens": estimate_tokens(full_body(ctx))}))

"""The ``resolve_target`` stage: requested model -> provider, upstream model, fallbacks.

Routes are tried first (features are computed once and the token estimate only if a route needs
it), then alias resolution (memoised). Targets whose provider is inactive are dropped; when none is
left the request fails with a 400 naming the provider and the key to set.
"""
from __future__ import annotations

from typing import Any, Mapping

from vandamme.kernel import Context

from .aliases import AliasIndex, Step
from .errors import GatewayError
from .request_stages import full_body
from .routing import RequestFeatures, Router


def key_hint(provider: Any, name: str) -> str:
    """The environment variable that would activate ``provider``."""
    for attr in ("api_key_env", "key_env"):
        v = getattr(provider, attr, None) if provider is not None else None
        if isinstance(v, str) and v:
            return v
        if isinstance(v, (list, tuple)) and v:
            return str(v[0])
    return name.upper().replace("-", "_") + "_API_KEY"


def inactive_message(name: str, provider: Any = None) -> str:
    """``provider 'groq' is not configured: set GROQ_API_KEY`` (or the compiler's reason)."""
    reason = getattr(provider, "inactive_reason", None) if provider is not None else None
    if reason:
        return f"provider '{name}' is not configured: {reason}"
    return f"provider '{name}' is not configured: set {key_hint(provider, name)}"


class ResolveTarget:
    name = "resolve_target"
    __slots__ = ("router", "alias_index", "providers", "_has_routes")

    def __init__(self, router: Router | None, alias_index: AliasIndex, providers: Mapping[str, Any]):
        self.router = router
        self.alias_index = alias_index
        self.providers = providers
        self._has_routes = bool(router is not None and router.routes)

    async def run(self, ctx: Context) -> None:
        head = ctx.head
        model = head.model
        ctx.requested_model = model

        hit = None
        if self._has_routes:
            features = RequestFeatures.from_head(head, ctx.headers, lambda: full_body(ctx))
            hit = self.router.match(features)  # type: ignore[union-attr]
        if hit is not None:
            res = hit.resolution
            pairs = hit.targets
            route = hit.route
            steps = [Step("route", None, None, res.target, route.source,
                          f"route '{route.name}' matched")]
            steps.extend(res.steps)
            ctx.route = route
        else:
            res = self.alias_index.resolve(model)
            pairs = ((res.provider, res.model),)
            steps = list(res.steps)

        providers = self.providers
        targets = []
        for pname, m in pairs:
            p = providers.get(pname)
            if p is not None and getattr(p, "active", True):
                targets.append((p, m))
        if not targets:
            pname = pairs[0][0]
            p = providers.get(pname)
            if p is None:
                raise GatewayError(404, f"provider '{pname}' (for model '{model}') is not defined in the specs")
            raise GatewayError(400, inactive_message(pname, p) + f" (model '{model}' resolves to it)")

        ctx.targets = targets
        ctx.provider, ctx.model = targets[0]
        ctx.resolution = steps

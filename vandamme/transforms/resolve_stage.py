"""The ``resolve_target`` stage: requested model -> provider, upstream model, fallbacks.

Routes are tried first (features are computed once per request, the token estimate only if a route
needs it), then alias resolution. Targets whose provider is not usable (inactive, or not defined)
are dropped; when none is left the request fails with the primary target's error (400 naming the
key to set, 404 for an undefined provider).

The decision is :meth:`ResolveTarget.resolve`, a pure function of the request's model and features
that returns a :class:`Resolved`; the stage's ``run`` applies it to the context, and
``vandamme explain`` and the spec's ``expect:`` checks call the same method. Every decision is
computed once: per route at build time, per model in a bounded LRU, so a request allocates no
decision of its own.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from vandamme.kernel import Context
from vandamme.sources import SourceMap

from .aliases import AliasIndex, Resolution, Step
from .errors import GatewayError
from .request_stages import full_body
from .routing import RequestFeatures, Route, Router


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


@dataclass(frozen=True, slots=True)
class Resolved:
    """Where a request goes, as ``resolve_target`` decides it.

    ``targets``: the usable ``(provider, upstream model)`` pairs, primary then fallbacks (provider
    objects, as the compiler built them); empty when the request would fail. ``declared``: every
    ``(provider name, model)`` the route or the alias resolution named, in order, usable or not.
    ``route``: the matched route, or None. ``resolution``: the alias resolution of the route's
    ``to`` (or of the model). ``steps``: what ``ctx.resolution`` gets (a ``route`` step first when
    a route matched). ``status``/``error``: the error the stage raises, None when it resolves.
    """

    targets: tuple[tuple[Any, str], ...]
    declared: tuple[tuple[str, str], ...]
    route: Route | None
    resolution: Resolution
    steps: tuple[Step, ...]
    status: int | None = None
    error: str | None = None

    @property
    def target(self) -> str:
        """``provider:model`` of the first usable target (of the primary one when none is)."""
        if self.targets:
            p, m = self.targets[0]
            return f"{p.name}:{m}"
        p, m = self.declared[0]
        return f"{p}:{m}"

    @property
    def fallbacks(self) -> tuple[str, ...]:
        """``provider:model`` of the usable targets after the first."""
        return tuple(f"{p.name}:{m}" for p, m in self.targets[1:])


class ResolveTarget:
    """The ``resolve_target`` stage. ``alias_index.active`` is the set of providers that count as
    configured (the compiler's active providers; every provider the spec enables in the
    as-declared mode of ``explain`` and ``expect:``); ``providers`` maps every provider name to its
    compiled object."""

    name = "resolve_target"
    __slots__ = ("router", "alias_index", "providers", "active", "_has_routes", "_routed", "_for_model")

    def __init__(self, router: Router | None, alias_index: AliasIndex, providers: Mapping[str, Any]):
        self.router = router
        self.alias_index = alias_index
        self.providers = providers
        self.active = alias_index.active
        routes = router.routes if router is not None else ()
        self._has_routes = bool(routes)
        self._routed = {r.index: self._route_decision(r) for r in routes}
        self._for_model = functools.lru_cache(maxsize=alias_index.cache_size)(self._model_decision)

    @classmethod
    def build(cls, data: Mapping[str, Any], sources: SourceMap | None, providers: Mapping[str, Any],
              active: Iterable[str] | None, cache_size: int = 4096) -> "ResolveTarget":
        """The stage for a spec: its alias index and router built for the ``active`` providers
        (None: every provider of the spec counts as active). Raises SpecErrors like the builders."""
        index = AliasIndex.build(data, sources, active=active, cache_size=cache_size)
        return cls(Router.build(data, sources, index), index, providers)

    # ------------------------------------------------------------------ the decision
    def resolve(self, model: str, features: RequestFeatures | None = None) -> Resolved:
        """The decision for a request for ``model`` whose route-relevant features are ``features``
        (None: a request with nothing but the model). The same decision is the same object."""
        if self._has_routes:
            if features is None:
                features = RequestFeatures(model=model)
            hit = self.router.match(features)  # type: ignore[union-attr]
            if hit is not None:
                return self._routed[hit.index]
        return self._for_model(model)

    def why_unusable(self, provider: str) -> tuple[int, str] | None:
        """``(status, reason)`` when provider ``provider`` cannot take a request, else None."""
        p = self.providers.get(provider)
        if p is None:
            return 404, f"provider '{provider}' is not defined in the specs"
        if provider not in self.active:
            return 400, inactive_message(provider, p)
        return None

    def _route_decision(self, route: Route) -> Resolved:
        res = route.target
        steps = (Step("route", None, None, res.target, route.source, f"route '{route.name}' matched"),
                 *res.steps)
        return self._decision(route.targets, route, res, steps, f"route '{route.name}' sends it there")

    def _model_decision(self, model: str) -> Resolved:
        res = self.alias_index.resolve(model)
        return self._decision(((res.provider, res.model),), None, res, res.steps,
                              f"model '{model}' resolves to it")

    def _decision(self, declared: tuple[tuple[str, str], ...], route: Route | None, res: Resolution,
                  steps: tuple[Step, ...], why: str) -> Resolved:
        targets = tuple((self.providers[p], m) for p, m in declared if self.why_unusable(p) is None)
        if targets:
            return Resolved(targets, declared, route, res, steps)
        status, reason = self.why_unusable(declared[0][0])  # type: ignore[misc]
        return Resolved((), declared, route, res, steps, status, f"{reason} ({why})")

    # ------------------------------------------------------------------ the stage
    async def run(self, ctx: Context) -> None:
        head = ctx.head
        model = ctx.requested_model = head.model
        features = RequestFeatures.from_head(head, ctx.headers, lambda: full_body(ctx)) \
            if self._has_routes else None
        decided = self.resolve(model, features)
        ctx.route = decided.route
        if decided.error is not None:
            raise GatewayError(decided.status, decided.error)
        targets = ctx.targets = list(decided.targets)
        ctx.provider, ctx.model = targets[0]
        ctx.resolution = list(decided.steps)

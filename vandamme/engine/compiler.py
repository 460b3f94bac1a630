"""Compiler: a validated spec → an immutable Gateway (providers, alias index, routes, pipelines).

Everything that can be decided before the first request is decided here: header templates are
compiled (constant ones rendered), converters are configured per provider, the alias index and
route matchers are built, and every pipeline is assembled as a loop over the stage registry's
templates and the spec's declared middleware (global, then route, then provider). A route that
declares middleware gets its own pipeline on each provider it can send to.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import aiohttp
from loguru import logger

from vandamme.transforms.aliases import AliasIndex
from vandamme.transforms.anthropic_to_openai import RequestConverter
from vandamme.transforms.errors import GatewayError
from vandamme.transforms.headers import HeaderTemplateError, RenderHeaders
from vandamme.transforms.keys import PASSTHRU, KeyRing
from vandamme.transforms.registry import (COUNT_TEMPLATES, DECODE_MODES, FRONT_TEMPLATE, PIPELINE_TEMPLATES,
                                 RESPONSE_MIDDLEWARE, Registry, StageSpec, default_registry, template_key)
from vandamme.transforms.request_stages import RepeatedParts
from vandamme.transforms.resolve_stage import ResolveTarget
from vandamme.transforms.routing import Router
from vandamme.transforms.shared_state import check_redis_url, redis_password, state_store
from vandamme.transforms.thought_signatures import SignatureCache
from vandamme.transforms.upstream import DEFAULT_MAX_RESPONSE_BYTES, Upstream
from vandamme.kernel import ANTHROPIC, OPENAI, StageKind
from vandamme.secrets import add_keys
from vandamme.sources import SpecError, SpecErrors

from .declarations import Declared, declarations
from .logs import install_secret_scrubbing
from .loader import LoadedSpec
from .pipeline import Pipeline, StageNode
from .telemetry import tracer_for

SERVER_DEFAULTS = {
    "host": "127.0.0.1",
    "port": 8082,
    "workers": 1,
    "request_timeout": 90.0,
    "connect_timeout": 10.0,
    "max_retries": 2,
    "retry_backoff": 0.5,
    "max_tokens_limit": None,
    "ping_interval": 10.0,
    "models_cache_ttl": 300.0,
    "max_response_bytes": DEFAULT_MAX_RESPONSE_BYTES,
}
POOL_DEFAULTS = {"limit": 2048, "limit_per_host": 0, "keepalive_timeout": 30.0}
DEFAULT_AUTH = {"openai": "bearer", "anthropic": "x-api-key"}


@dataclass(frozen=True, slots=True)
class Settings:
    host: str
    port: int
    workers: int
    request_timeout: float
    connect_timeout: float
    max_retries: int
    retry_backoff: float
    max_tokens_limit: int | None
    ping_interval: float
    models_cache_ttl: float
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    log_level: str = "INFO"
    log_json: bool = False
    log_format: str = "text"  # text | json | journal (logging.format; logging.json: true is json)
    access_log: bool = False
    service_name: str = "vandamme"
    otlp_endpoint: str | None = None
    sample_ratio: float | None = None
    capture_content: bool = False  # prompts and completions on the spans (telemetry.capture_content)
    auth_keys: tuple = ()  # ({"name", "key"}, ...): gateway keys; none = auth off
    # metrics (vandamme/engine/metrics.py; the spec's ``metrics:`` block)
    metrics_enabled: bool = True
    metrics_require_key: bool = True  # with gateway auth on, the /metrics endpoints need a key
    metrics_recent: int = 200  # requests /metrics/recent keeps (per worker process)
    metrics_max_models: int = 200  # distinct model label values; more are counted as "_other"
    metrics_export_interval: float | None = None  # OTLP export period, s (None: OTEL_METRIC_EXPORT_INTERVAL or 60)


@dataclass(eq=False)
class Provider:
    """One upstream provider. Its fields are fixed at compile time; only ``session`` (the pooled
    aiohttp session) is created when the server starts, inside the running event loop."""

    name: str
    format: str
    base_url: str
    spec: Mapping[str, Any]
    active: bool
    inactive_reason: str | None
    auth: str
    passthrough: bool
    key_count: int
    query: Mapping[str, str]
    timeout: aiohttp.ClientTimeout
    pool: Mapping[str, Any]
    pipeline: Pipeline | None = None
    count_pipeline: Pipeline | None = None
    route_pipelines: dict[int, Pipeline] = field(default_factory=dict)  # route index -> pipeline
    middleware: tuple = ()  # this provider's declared middleware, built
    session: aiohttp.ClientSession | None = None

    def pipeline_for(self, route: Any) -> Pipeline | None:
        """The pipeline a request takes here: the matched route's variant (with its middleware)
        when the route declares middleware, else the provider's own."""
        if route is not None and self.route_pipelines:
            return self.route_pipelines.get(route.index, self.pipeline)
        return self.pipeline

    def summary(self) -> dict:
        """What /health and logs may say about a provider: never a key."""
        return {
            "name": self.name,
            "format": self.format,
            "base_url": self.base_url,
            "active": self.active,
            **({"inactive_reason": self.inactive_reason} if not self.active else {}),
            "keys": "passthrough" if self.passthrough else self.key_count,
        }

    async def open(self) -> None:
        if self.session is None or self.session.closed:
            connector = aiohttp.TCPConnector(
                limit=self.pool["limit"], limit_per_host=self.pool["limit_per_host"],
                keepalive_timeout=self.pool["keepalive_timeout"], ttl_dns_cache=300)
            self.session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                                 raise_for_status=False)

    async def close(self) -> None:
        if self.session is not None and not self.session.closed:
            await self.session.close()
        self.session = None


@dataclass(frozen=True, eq=False)
class Gateway:
    spec: LoadedSpec
    settings: Settings
    providers: Mapping[str, Provider]
    default_provider: str | None
    alias_index: AliasIndex
    router: Router
    front: Pipeline
    tracer: Any = None
    extras: Mapping[str, Any] = field(default_factory=dict)
    registry: Any = None

    async def start(self) -> None:
        for p in self.providers.values():
            if p.active:
                await p.open()
        if "state" in self.extras:  # shared state (vandamme.transforms.shared_state): a no-op in-process
            await self.extras["state"].start()

    async def close(self) -> None:
        closing = [p.close() for p in self.providers.values()]
        if "state" in self.extras:
            closing.append(self.extras["state"].close())
        await asyncio.gather(*closing, return_exceptions=True)

    def pipelines(self) -> dict[str, list[str]]:
        """Stage names by pipeline, for `vandamme graph` and `explain`."""
        out = {"front": self.front.stage_names}
        for p in self.providers.values():
            if p.pipeline is not None:
                out[f"{p.name}"] = p.pipeline.stage_names
                out[f"{p.name}.count_tokens"] = p.count_pipeline.stage_names
                for pipe in p.route_pipelines.values():
                    out[pipe.name] = pipe.stage_names
        return out

    def pipeline_for(self, provider: str, route: Any = None) -> Pipeline | None:
        """The pipeline a request resolved to ``provider`` (through ``route``, or None) runs."""
        p = self.providers.get(provider)
        return p.pipeline_for(route) if p is not None else None


def _log_format(logging_: dict) -> str:
    fmt = logging_.get("format")
    if fmt:
        return str(fmt)
    return "json" if logging_.get("json") else "text"


def settings_from(data: dict) -> Settings:
    server = {**SERVER_DEFAULTS, **(data.get("server") or {})}
    logging_ = data.get("logging") or {}
    telemetry = data.get("telemetry") or {}
    return Settings(
        host=server["host"], port=int(server["port"]), workers=int(server["workers"]),
        request_timeout=float(server["request_timeout"]), connect_timeout=float(server["connect_timeout"]),
        max_retries=int(server["max_retries"]), retry_backoff=float(server["retry_backoff"]),
        max_tokens_limit=server["max_tokens_limit"], ping_interval=float(server["ping_interval"]),
        models_cache_ttl=float(server["models_cache_ttl"]),
        max_response_bytes=int(server["max_response_bytes"]),
        log_level=str(logging_.get("level", "INFO")).upper(), log_json=_log_format(logging_) == "json",
        log_format=_log_format(logging_),
        access_log=bool(logging_.get("access_log", False)),
        service_name=telemetry.get("service_name") or "vandamme",
        otlp_endpoint=telemetry.get("otlp_endpoint"),
        sample_ratio=telemetry.get("sample_ratio"),
        capture_content=bool(telemetry.get("capture_content", False)),
        auth_keys=tuple((server.get("auth") or {}).get("keys") or ()),
        **_metrics_settings(data.get("metrics") or {}),
    )


def _metrics_settings(metrics: dict) -> dict:
    out = {"metrics_enabled": bool(metrics.get("enabled", True)),
           "metrics_require_key": bool(metrics.get("require_key", True)),
           "metrics_recent": int(metrics.get("recent", 200)),
           "metrics_max_models": int(metrics.get("max_models", 200))}
    if metrics.get("export_interval") is not None:
        out["metrics_export_interval"] = float(metrics["export_interval"])
    return out


def _provider(name: str, spec: dict, settings: Settings) -> Provider:
    keys = [k for k in (spec.get("api_keys") or [])]
    passthrough = PASSTHRU in keys
    static = tuple(k for k in keys if k != PASSTHRU)
    requires_key = spec.get("requires_key", True)
    reason = None
    if spec.get("enabled") is False:
        reason = "disabled in the spec (enabled: false)"
    elif not (passthrough or static or not requires_key):
        reason = f"no API key: set {name.upper()}_API_KEY"
    fmt = spec["format"]
    api_style = spec.get("api_style", "standard")
    auth = spec.get("auth") or ("api-key" if api_style == "azure" else DEFAULT_AUTH[fmt])
    query = {}
    if api_style == "azure" and spec.get("api_version"):
        query["api-version"] = spec["api_version"]
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=float(spec.get("connect_timeout", settings.connect_timeout)),
        sock_read=float(spec.get("request_timeout", settings.request_timeout)),
    )
    return Provider(
        name=name, format=fmt, base_url=spec["base_url"].rstrip("/"), spec=MappingProxyType(spec),
        active=reason is None, inactive_reason=reason, auth=auth, passthrough=passthrough,
        key_count=len(static), query=MappingProxyType(query), timeout=timeout,
        pool=MappingProxyType({**POOL_DEFAULTS, **(spec.get("pool") or {})}),
    )


@dataclass
class BuildEnv:
    """What stage factories get at compile time: gateway-wide objects, and for a provider pipeline
    that provider's own (its key ring, headers, upstream stage, converter)."""

    settings: Settings
    tracer: Any
    shared: Mapping[str, Any]
    resolver: Any = None
    provider: Provider | None = None
    ring: KeyRing | None = None
    headers: RenderHeaders | None = None
    upstream: Upstream | None = None
    converter: RequestConverter | None = None
    decode_mode: str = "full"
    openai_request_hooks: bool = False


@dataclass(frozen=True, eq=False)
class BuiltMiddleware:
    """A declared middleware built once (its stages are shared by every pipeline it is in)."""

    declared: Declared
    request: Any
    response: Any


def _node(stage: Any, spec: StageSpec, origin: str, side: str) -> StageNode:
    return StageNode(stage, spec.name, spec.kind.value, spec.consumes, spec.needs_body, origin, side,
                     spec.origin)


def assemble(name: str, template: tuple, middleware: tuple[BuiltMiddleware, ...], env: BuildEnv,
             registry: Registry) -> Pipeline:
    """One pipeline: the template's stages from the registry, the declared middleware of each wire
    format where the template marks it (answers in reverse), one ``decode_body`` before the first
    stage that needs the decoded request, and ``encode_upstream`` after the last OpenAI-side stage
    that changes the converted request."""
    openai_body_hooks = [m for m in middleware
                         if m.request is not None and m.declared.spec.consumes == OPENAI and m.declared.spec.needs_body]
    env.openai_request_hooks = bool(openai_body_hooks)
    nodes: list[StageNode] = []
    for item in template:
        if isinstance(item, tuple):  # where the declared middleware of one wire format go
            marker, fmt = item
            ours = [m for m in middleware if m.declared.spec.consumes == fmt]
            if marker == RESPONSE_MIDDLEWARE:
                nodes += [_node(m.response, m.declared.spec, str(m.declared.source), "response")
                          for m in reversed(ours) if m.response is not None]
            else:
                nodes += [_node(m.request, m.declared.spec, str(m.declared.source), "request")
                          for m in ours if m.request is not None]
            continue
        spec = registry[item]
        stage = spec.build({}, env).request
        if stage is None:  # turned off by the spec (e.g. authenticate without keys)
            continue
        side = "response" if spec.kind is StageKind.RESPONSE else "request"
        nodes.append(_node(stage, spec, "built in", side))
    first = next((i for i, n in enumerate(nodes)
                  if n.side == "request" and n.consumes == ANTHROPIC and n.needs_body), None)
    if first is not None:
        spec = registry["decode_body"]
        nodes.insert(first, _node(spec.build({}, env).request, spec, "built in", "request"))
    if openai_body_hooks:
        last = max(i for i, n in enumerate(nodes) if n.stage is openai_body_hooks[-1].request)
        spec = registry["encode_upstream"]
        nodes.insert(last + 1, _node(spec.build({}, env).request, spec, "built in", "request"))
    return Pipeline(name, [n.stage for n in nodes], env.tracer, nodes=nodes,
                    middleware=tuple(m.declared.name for m in middleware))


def _provider_env(p: Provider, data: dict, settings: Settings, base: BuildEnv, errors: list[SpecError],
                  sources) -> BuildEnv | None:
    spec = p.spec
    ring = KeyRing(tuple(k for k in (spec.get("api_keys") or []) if k != PASSTHRU),
                   float(spec.get("key_cooldown", 60.0)), store=base.shared.get("state"), provider=p.name)
    try:
        headers = RenderHeaders(p.name, p.format, p.auth, dict(data.get("headers") or {}),
                                dict(spec.get("headers") or {}), list(spec.get("client_headers") or []))
    except HeaderTemplateError as exc:
        errors.append(SpecError(str(exc), sources.nearest(("providers", p.name, "headers")),
                                ("providers", p.name, "headers")))
        return None
    max_retries = int(spec.get("max_retries", settings.max_retries))
    upstream = Upstream(p, ring, max_retries, settings.retry_backoff, base.tracer,
                        passthrough_stream=p.format == ANTHROPIC,
                        max_response_bytes=settings.max_response_bytes)
    converter = RequestConverter(max_tokens_limit=spec.get("max_tokens_limit", settings.max_tokens_limit),
                                 allow_top_k=bool(spec.get("allow_top_k", False)),
                                 reasoning=bool(spec.get("reasoning", False)))
    key = template_key(p.format, spec.get("api_style"))
    return BuildEnv(settings, base.tracer, base.shared, provider=p, ring=ring, headers=headers,
                    upstream=upstream, converter=converter, decode_mode=DECODE_MODES[key])


def _build_middleware(declared: tuple[Declared, ...], env: BuildEnv) -> tuple[BuiltMiddleware, ...]:
    out = []
    for d in declared:
        built = d.spec.build(d.config, env)
        out.append(BuiltMiddleware(d, built.request, built.response))
    return tuple(out)


def compile_gateway(loaded: LoadedSpec, tracer_provider=None, registry: Registry | None = None) -> Gateway:
    """Compile a loaded spec. ``tracer_provider`` (an OTel SDK TracerProvider) turns on one span
    per stage; None means tracing is off and the stage loop carries no span code at all."""
    data = loaded.data
    registry = registry or default_registry()
    settings = settings_from(data)
    tracer = tracer_for(tracer_provider, settings) if tracer_provider is not None else None
    decl, errors = declarations(data, loaded.sources, registry)
    if errors:
        raise SpecErrors(errors)
    install_secret_scrubbing()  # keys never reach a log line, error body or span (vandamme.secrets)
    for spec in (data.get("providers") or {}).values():
        add_keys(k for k in (spec.get("api_keys") or ()) if k != PASSTHRU)
    add_keys(k["key"] for k in settings.auth_keys)
    state_spec = data.get("state") or {}
    if state_spec.get("redis_url"):
        password = redis_password(state_spec["redis_url"])
        if password:
            add_keys([password])
        problem = check_redis_url(state_spec["redis_url"])
        if problem:
            raise SpecErrors([SpecError(problem, loaded.sources.nearest(("state", "redis_url")),
                                        ("state", "redis_url"))])
    state = state_store(state_spec)  # in-process, or Redis (connected by Gateway.start)
    ts = data.get("thought_signatures") or {}
    signatures = SignatureCache(float(ts.get("cache_ttl", 3600.0)), int(ts.get("max_cache_size", 10000)),
                                store=state)
    shared = MappingProxyType({"thought_signatures": signatures, "repeated_parts": RepeatedParts(),
                               "state": state})
    base = BuildEnv(settings, tracer, shared)
    global_mw = _build_middleware(decl.global_, base)
    route_mw = {i: _build_middleware(d, base) for i, d in (decl.routes or {}).items() if d}
    providers: dict[str, Provider] = {}
    envs: dict[str, BuildEnv] = {}
    for name, spec in (data.get("providers") or {}).items():
        p = _provider(name, dict(spec), settings)
        env = _provider_env(p, data, settings, base, errors, loaded.sources)
        providers[name] = p
        if env is None:
            continue
        envs[name] = env
        key = template_key(p.format, spec.get("api_style"))
        provider_mw = _build_middleware(decl.provider(name), env)
        p.middleware = provider_mw
        p.pipeline = assemble(name, PIPELINE_TEMPLATES[key], global_mw + provider_mw, env, registry)
        p.count_pipeline = assemble(f"{name}.count_tokens", COUNT_TEMPLATES[key], (), env, registry)
    if errors:
        raise SpecErrors(errors)
    active = {n for n, p in providers.items() if p.active}
    resolver = ResolveTarget.build(data, loaded.sources, providers, active)
    alias_index, router = resolver.alias_index, resolver.router
    for route in router.routes:  # a route with middleware gets its own pipeline on each of its targets
        mw = route_mw.get(route.index)
        if not mw:
            continue
        for pname, _model in route.targets:
            p = providers.get(pname)
            if p is None or pname not in envs or route.index in p.route_pipelines:
                continue
            key = template_key(p.format, p.spec.get("api_style"))
            p.route_pipelines[route.index] = assemble(
                f"{pname} (route {route.name})", PIPELINE_TEMPLATES[key], global_mw + mw + p.middleware,
                envs[pname], registry)
    base.resolver = resolver
    front = assemble("front", FRONT_TEMPLATE, (), base, registry)
    default = data.get("default_provider")
    logger.debug("compiled {} providers ({} active)", len(providers), len(active))
    return Gateway(spec=loaded, settings=settings, providers=MappingProxyType(providers),
                   default_provider=default, alias_index=alias_index, router=router, front=front,
                   tracer=tracer, extras=shared, registry=registry)


__all__ = ["Gateway", "Provider", "Settings", "compile_gateway", "settings_from", "GatewayError"]

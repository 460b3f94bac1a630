"""Compiler: a validated spec → an immutable Gateway (providers, alias index, routes, pipelines).

Everything that can be decided before the first request is decided here: header templates are
compiled (constant ones rendered), converters are configured per provider, the alias index and
route matchers are built, and each provider gets its ordered stage list.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping

import aiohttp
from loguru import logger

from transforms.aliases import AliasIndex
from transforms.anthropic_to_openai import RequestConverter
from transforms.conversion_stages import AnthropicToOpenAI, OpenAIToAnthropic
from transforms.errors import GatewayError
from transforms.headers import HeaderTemplateError, RenderHeaders
from transforms.keys import PASSTHRU, KeyRing, SelectKey
from transforms.passthrough import PassthroughBody
from transforms.provider_stages import AzureDeployment, Dispatch, EstimateTokens
from transforms.request_stages import DecodeBody, Parse, Validate
from transforms.resolve_stage import ResolveTarget
from transforms.routing import Router
from transforms.thought_signatures import CaptureThoughtSignatures, RestoreThoughtSignatures, SignatureCache
from transforms.upstream import Upstream

from vandamme.sources import SpecError, SpecErrors
from .loader import LoadedSpec
from .pipeline import Pipeline

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
    log_level: str = "INFO"
    log_json: bool = False
    access_log: bool = False
    service_name: str = "vandamme"
    otlp_endpoint: str | None = None
    sample_ratio: float | None = None


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
    session: aiohttp.ClientSession | None = None

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

    async def start(self) -> None:
        for p in self.providers.values():
            if p.active:
                await p.open()

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.providers.values()), return_exceptions=True)

    def pipelines(self) -> dict[str, list[str]]:
        """Stage names by pipeline, for `vandamme graph` and `explain`."""
        out = {"front": self.front.stage_names}
        for p in self.providers.values():
            if p.pipeline is not None:
                out[f"{p.name}"] = p.pipeline.stage_names
                out[f"{p.name}.count_tokens"] = p.count_pipeline.stage_names
        return out


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
        log_level=str(logging_.get("level", "INFO")).upper(), log_json=bool(logging_.get("json", False)),
        access_log=bool(logging_.get("access_log", False)),
        service_name=telemetry.get("service_name") or "vandamme",
        otlp_endpoint=telemetry.get("otlp_endpoint"),
        sample_ratio=telemetry.get("sample_ratio"),
    )


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


def uses_thought_signatures(p: Provider, data: dict) -> bool:
    """The Gemini middleware applies to OpenAI-format providers that are Gemini: named gemini* or
    pointing at Google's generativelanguage endpoint; it is on when listed in ``middleware`` or
    ``thought_signatures.enabled`` (GEMINI_THOUGHT_SIGNATURES_ENABLED) is true."""
    on = "gemini_thought_signatures" in (data.get("middleware") or []) or \
        bool((data.get("thought_signatures") or {}).get("enabled"))
    is_gemini = p.name.startswith("gemini") or "generativelanguage.googleapis.com" in p.base_url
    return on and is_gemini and p.format == "openai"


def _provider_stages(p: Provider, data: dict, settings: Settings, tracer, errors: list[SpecError],
                     sources, signatures: SignatureCache) -> tuple[list, list]:
    spec = p.spec
    ring = KeyRing(tuple(k for k in (spec.get("api_keys") or []) if k != PASSTHRU),
                   float(spec.get("key_cooldown", 60.0)))
    select = SelectKey(p.name, ring, p.passthrough, spec.get("requires_key", True))
    try:
        headers = RenderHeaders(p.name, p.format, p.auth, dict(data.get("headers") or {}),
                                dict(spec.get("headers") or {}), list(spec.get("client_headers") or []))
    except HeaderTemplateError as exc:
        errors.append(SpecError(str(exc), sources.nearest(("providers", p.name, "headers")),
                                ("providers", p.name, "headers")))
        return [], []
    max_retries = int(spec.get("max_retries", settings.max_retries))
    if p.format == "anthropic":
        upstream = Upstream(p, ring, max_retries, settings.retry_backoff, tracer, passthrough_stream=True)
        stages = [select, headers, PassthroughBody(), upstream]
        return stages, stages
    limit = spec.get("max_tokens_limit", settings.max_tokens_limit)
    converter = RequestConverter(max_tokens_limit=limit, allow_top_k=bool(spec.get("allow_top_k", False)),
                                 reasoning=bool(spec.get("reasoning", False)))
    stages = [DecodeBody(), select, headers]
    if spec.get("api_style") == "azure":
        stages.append(AzureDeployment(dict(spec.get("deployments") or {})))
    stages.append(AnthropicToOpenAI(converter))
    gemini = uses_thought_signatures(p, data)
    if gemini:
        stages.append(RestoreThoughtSignatures(signatures))
    stages.append(Upstream(p, ring, max_retries, settings.retry_backoff, tracer))
    if gemini:
        stages.append(CaptureThoughtSignatures(signatures))
    stages.append(OpenAIToAnthropic(ping_interval=settings.ping_interval))
    return stages, [EstimateTokens()]


def compile_gateway(loaded: LoadedSpec, tracer_provider=None) -> Gateway:
    """Compile a loaded spec. ``tracer_provider`` (an OTel SDK TracerProvider) turns on one span
    per stage; None means tracing is off and the stage loop carries no span code at all."""
    data = loaded.data
    settings = settings_from(data)
    tracer = tracer_provider.get_tracer("vandamme") if tracer_provider is not None else None
    errors: list[SpecError] = []
    providers: dict[str, Provider] = {}
    ts = data.get("thought_signatures") or {}
    signatures = SignatureCache(float(ts.get("cache_ttl", 3600.0)), int(ts.get("max_cache_size", 10000)))
    for name, spec in (data.get("providers") or {}).items():
        p = _provider(name, dict(spec), settings)
        stages, count_stages = _provider_stages(p, data, settings, tracer, errors, loaded.sources,
                                               signatures)
        p.pipeline = Pipeline(name, stages, tracer)
        p.count_pipeline = Pipeline(f"{name}.count_tokens", count_stages, tracer)
        providers[name] = p
    if errors:
        raise SpecErrors(errors)
    active = {n for n, p in providers.items() if p.active}
    alias_index = AliasIndex.build(data, loaded.sources, active=active)
    router = Router.build(data, loaded.sources, alias_index)
    resolve = ResolveTarget(router, alias_index, providers)
    front = Pipeline("front", [Parse(), Validate(), resolve, Dispatch(tracer)], tracer)
    default = data.get("default_provider")
    logger.debug("compiled {} providers ({} active)", len(providers), len(active))
    return Gateway(spec=loaded, settings=settings, providers=MappingProxyType(providers),
                   default_provider=default, alias_index=alias_index, router=router, front=front,
                   tracer=tracer, extras=MappingProxyType({"thought_signatures": signatures}))


__all__ = ["Gateway", "Provider", "Settings", "compile_gateway", "settings_from", "GatewayError"]

"""The stage registry: every stage, built-in or user-written, declared once.

A :class:`StageSpec` says what a stage is — its name, its :class:`~vandamme.kernel.StageKind`,
the wire format it consumes, whether it needs the decoded body, its config schema (JSON Schema
with defaults) — and holds the factory that builds it at compile time. The compiler assembles
every pipeline as a loop over the spec and this registry (:data:`PIPELINE_TEMPLATES` for the
stages every provider of a format gets, ``middleware:`` lists for the declared ones).

Stages come from three places: built in (this package), installed plugins (the Python entry-point
group ``vandamme.stages``), and import paths in a spec (``- use: "package.module:Class"``).
A plugin or an imported class is a :class:`~vandamme.kernel.Middleware` subclass (or a
``StageSpec``); a broken one is reported as a spec error where it is named, never a traceback.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping

from vandamme.kernel import ANTHROPIC, OPENAI, Middleware, StageKind

from . import middleware as builtin_middleware
from .auth import authenticate_stage
from .conversion_stages import AnthropicToOpenAI, EncodeUpstream, OpenAIToAnthropic
from .keys import SelectKey
from .metrics_stage import RecordMetrics
from .middleware_stages import middleware_stages
from .passthrough import PassthroughBody
from .provider_stages import AzureDeployment, Dispatch, EstimateTokens
from .request_stages import DecodeBody, Parse, Validate
from .thought_signatures import thought_signature_stages

ENTRY_POINT_GROUP = "vandamme.stages"
_EMPTY_CONFIG = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Built:
    """What a factory returns: the stage for the way in and/or the one for the way out."""

    request: Any = None
    response: Any = None


@dataclass(frozen=True)
class StageSpec:
    """One registered stage. ``factory(config, env)`` returns a :class:`Built` (or one stage,
    placed on the way in; or None when the spec turns the stage off). ``declarable`` stages may be
    named in ``middleware:`` lists; the others are placed by :data:`PIPELINE_TEMPLATES`."""

    name: str
    kind: StageKind
    consumes: str
    needs_body: bool
    factory: Callable[[Mapping[str, Any], Any], Any]
    config_schema: Mapping[str, Any] = field(default_factory=lambda: dict(_EMPTY_CONFIG))
    declarable: bool = False
    origin: str = "built in"
    description: str = ""
    hooks: tuple[str, ...] = ()

    def build(self, config: Mapping[str, Any], env: Any) -> Built:
        out = self.factory(config, env)
        return out if isinstance(out, Built) else Built(request=out)


def middleware_spec(cls: type[Middleware], origin: str) -> StageSpec:
    """The StageSpec of a :class:`Middleware` subclass."""
    hooks = cls.hooks()
    kind = StageKind.REQUEST if "on_request" in hooks or not hooks else StageKind.RESPONSE

    def factory(config, env):
        return Built(*middleware_stages(cls(config), env))

    return StageSpec(cls.name, kind, cls.consumes, True, factory, cls.config_schema, declarable=True,
                     origin=origin, description=cls.description or (cls.__doc__ or "").strip().split("\n")[0],
                     hooks=hooks)


class StageLoadError(Exception):
    """A plugin or import path that could not be loaded (the message says why)."""


def check_class(obj: Any, what: str) -> type[Middleware]:
    if not (isinstance(obj, type) and issubclass(obj, Middleware)):
        raise StageLoadError(f"{what} is not a vandamme.kernel.Middleware subclass")
    if not obj.name or not isinstance(obj.name, str):
        raise StageLoadError(f"{what} has no `name`")
    if obj.consumes not in (ANTHROPIC, OPENAI):
        raise StageLoadError(f"{what}: consumes must be 'anthropic' or 'openai', got {obj.consumes!r}")
    return obj


def import_stage(path: str) -> StageSpec:
    """``"package.module:ClassName"`` -> its StageSpec; StageLoadError saying why not."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise StageLoadError(f"expected 'package.module:ClassName', got {path!r}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the user's to fix
        raise StageLoadError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise StageLoadError(f"module {module_name!r} has no {attr!r}")
    return middleware_spec(check_class(obj, path), f"import {path}")


# --------------------------------------------------------------------------- built-in stages
def _core(name, kind, consumes, needs_body, factory, description) -> StageSpec:
    return StageSpec(name, kind, consumes, needs_body, factory, description=description)


BUILTIN: tuple[StageSpec, ...] = (
    # front: every request
    _core("record_metrics", StageKind.CONTROL, ANTHROPIC, False,
          lambda c, e: RecordMetrics() if e.settings.metrics_enabled else None,
          "count the request and record its outcome (GET /metrics); present unless metrics.enabled is false"),
    _core("authenticate", StageKind.CONTROL, ANTHROPIC, False,
          lambda c, e: authenticate_stage(e.settings.auth_keys),
          "gateway keys (server.auth.keys): 401 without one; present only when keys are declared"),
    _core("parse", StageKind.REQUEST, ANTHROPIC, False, lambda c, e: Parse(),
          "decode the request head (model, max_tokens, stream, thinking, messages/tools as raw)"),
    _core("validate", StageKind.REQUEST, ANTHROPIC, False, lambda c, e: Validate(),
          "check the top-level fields the gateway relies on"),
    _core("resolve_target", StageKind.CONTROL, ANTHROPIC, False, lambda c, e: e.resolver,
          "routes, then aliases: provider, upstream model and fallbacks"),
    _core("dispatch", StageKind.CONTROL, ANTHROPIC, False, lambda c, e: Dispatch(e.tracer),
          "run the target's pipeline; on failure the route's fallbacks, each from the client's request"),
    # provider pipelines
    _core("decode_body", StageKind.REQUEST, ANTHROPIC, False,
          lambda c, e: DecodeBody(mode=e.decode_mode, parts=e.shared.get("repeated_parts")),
          "decode the Anthropic request once, for the stages that need it"),
    _core("select_key", StageKind.CONTROL, ANTHROPIC, False,
          lambda c, e: SelectKey(e.provider.name, e.ring, e.provider.passthrough,
                                 e.provider.spec.get("requires_key", True)),
          "pick this attempt's key order (round robin, cooldowns) or the client's key"),
    _core("render_headers", StageKind.REQUEST, ANTHROPIC, False, lambda c, e: e.headers,
          "protocol headers, the spec's header templates, then auth"),
    _core("passthrough_body", StageKind.REQUEST, ANTHROPIC, False, lambda c, e: PassthroughBody(),
          "the client's bytes upstream (model spliced in), or the changed body re-encoded"),
    _core("azure_deployment", StageKind.REQUEST, OPENAI, False,
          lambda c, e: AzureDeployment(dict(e.provider.spec.get("deployments") or {})),
          "Azure OpenAI deployment URL"),
    _core("anthropic_to_openai", StageKind.REQUEST, ANTHROPIC, True,
          lambda c, e: AnthropicToOpenAI(e.converter, keep_json=e.openai_request_hooks),
          "convert the Anthropic request to an OpenAI chat request"),
    _core("encode_upstream", StageKind.REQUEST, OPENAI, False, lambda c, e: EncodeUpstream(),
          "serialise the OpenAI request after the OpenAI-side stages changed it"),
    _core("upstream", StageKind.TERMINAL, ANTHROPIC, False, lambda c, e: e.upstream,
          "the HTTP exchange: retries with backoff, key failover"),
    _core("openai_to_anthropic", StageKind.RESPONSE, OPENAI, False,
          lambda c, e: OpenAIToAnthropic(ping_interval=e.settings.ping_interval),
          "convert the OpenAI answer (or each stream chunk) to Anthropic"),
    _core("estimate_tokens", StageKind.TERMINAL, ANTHROPIC, False, lambda c, e: EstimateTokens(),
          "count_tokens answered locally (OpenAI-format providers)"),
    StageSpec("gemini_thought_signatures", StageKind.RESPONSE, OPENAI, False,
              lambda c, e: Built(*thought_signature_stages(e.shared["thought_signatures"])),
              declarable=True, hooks=("on_request", "on_response", "on_event"),
              description="keep Gemini's thought signatures across turns (restore on the way in, "
                          "capture on the way out)"),
) + tuple(middleware_spec(cls, "built in") for cls in builtin_middleware.BUILTIN)

# The stages each kind of provider pipeline gets, in order. ``REQUEST_MIDDLEWARE`` and
# ``RESPONSE_MIDDLEWARE`` mark where the declared middleware of a wire format go (responses in
# reverse order). ``decode_body`` is inserted by the compiler before the first stage that needs
# the decoded body; ``encode_upstream`` after the last OpenAI-side request stage that changes it.
REQUEST_MIDDLEWARE = "request middleware"
RESPONSE_MIDDLEWARE = "response middleware"
PIPELINE_TEMPLATES: Mapping[str, tuple] = {
    "anthropic": ("select_key", "render_headers", (REQUEST_MIDDLEWARE, ANTHROPIC), "passthrough_body",
                  "upstream", (RESPONSE_MIDDLEWARE, ANTHROPIC)),
    "openai": ("select_key", "render_headers", (REQUEST_MIDDLEWARE, ANTHROPIC), "anthropic_to_openai",
               (REQUEST_MIDDLEWARE, OPENAI), "upstream", (RESPONSE_MIDDLEWARE, OPENAI),
               "openai_to_anthropic", (RESPONSE_MIDDLEWARE, ANTHROPIC)),
    "openai/azure": ("select_key", "render_headers", (REQUEST_MIDDLEWARE, ANTHROPIC), "azure_deployment",
                     "anthropic_to_openai", (REQUEST_MIDDLEWARE, OPENAI), "upstream",
                     (RESPONSE_MIDDLEWARE, OPENAI), "openai_to_anthropic", (RESPONSE_MIDDLEWARE, ANTHROPIC)),
}
COUNT_TEMPLATES: Mapping[str, tuple] = {
    "anthropic": ("select_key", "render_headers", "passthrough_body", "upstream"),
    "openai": ("estimate_tokens",),
    "openai/azure": ("estimate_tokens",),
}
FRONT_TEMPLATE = ("record_metrics", "authenticate", "parse", "validate", "resolve_target", "dispatch")
# How a provider's pipeline decodes the client's request: only the fields conversion reads, or all.
DECODE_MODES: Mapping[str, str] = {"anthropic": "full", "openai": "conversion", "openai/azure": "conversion"}


def template_key(fmt: str, api_style: str | None) -> str:
    return fmt if not api_style or api_style == "standard" else f"{fmt}/{api_style}"


class Registry:
    """Stage name -> StageSpec: the built-ins plus the installed plugins (loaded once)."""

    def __init__(self, specs: tuple[StageSpec, ...] = BUILTIN, plugins: bool = True):
        self._specs: dict[str, StageSpec] = {}
        for spec in specs:
            if spec.name in self._specs:
                raise ValueError(f"stage {spec.name!r} registered twice")
            self._specs[spec.name] = spec
        # plugin name -> error text, for plugins that failed to load (reported where named)
        self.broken: dict[str, str] = {}
        if plugins:
            self._load_plugins()

    def _load_plugins(self) -> None:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            what = f"plugin {ep.name!r} ({ep.value}, from {ep.dist.name if ep.dist else '?'})"
            try:
                obj = ep.load()
                spec = obj if isinstance(obj, StageSpec) else middleware_spec(
                    check_class(obj, what), f"plugin {ep.dist.name if ep.dist else ep.value}")
            except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, not raised
                text = str(exc) if isinstance(exc, StageLoadError) else f"{type(exc).__name__}: {exc}"
                self.broken[ep.name] = f"{what} failed to load: {text}"
                continue
            if spec.name != ep.name:
                self.broken[ep.name] = f"{what}: entry point name differs from the stage's name {spec.name!r}"
            elif spec.name in self._specs:
                self.broken[ep.name] = f"{what}: a stage named {spec.name!r} already exists ({self._specs[spec.name].origin})"
            else:
                self._specs[spec.name] = spec

    def get(self, name: str) -> StageSpec | None:
        return self._specs.get(name)

    def __getitem__(self, name: str) -> StageSpec:
        return self._specs[name]

    def __iter__(self):
        return iter(self._specs.values())

    def declarable(self) -> list[str]:
        return [s.name for s in self._specs.values() if s.declarable]


_DEFAULT: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry (built-ins plus installed plugins), built on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Registry()
    return _DEFAULT

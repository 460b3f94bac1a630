"""Upstream headers: auth, protocol headers and the spec's jinja2 header templates.

Templates run in jinja2's SandboxedEnvironment. A template without variables is rendered once at
compile time; the others are compiled once and rendered per request with the variables
``request`` (``request.id``), ``provider``, ``model``, ``requested_model`` and ``headers`` (only the
client headers the provider lists in ``client_headers``, lower-cased names).
"""
from __future__ import annotations

from jinja2 import StrictUndefined, TemplateError, meta
from jinja2.sandbox import SandboxedEnvironment

from .errors import GatewayError

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)

# Client headers an Anthropic passthrough forwards as they are.
ANTHROPIC_FORWARD = ("anthropic-version", "anthropic-beta")


class HeaderTemplateError(ValueError):
    pass


def _check_value(name: str, value: str) -> str:
    if "\r" in value or "\n" in value:
        raise HeaderTemplateError(f"header {name!r} renders to a value with CR/LF")
    return value


class HeaderSet:
    """Compiled header templates: constant ones pre-rendered, the rest kept as templates."""

    __slots__ = ("constant", "dynamic")

    def __init__(self, templates: dict[str, str]):
        self.constant: dict[str, str] = {}
        self.dynamic: list[tuple[str, object]] = []
        for name, text in templates.items():
            try:
                ast = _ENV.parse(text)
            except TemplateError as exc:
                raise HeaderTemplateError(f"header {name!r}: template error: {exc}") from None
            if not meta.find_undeclared_variables(ast):
                try:
                    value = _ENV.from_string(text).render()
                except TemplateError as exc:
                    raise HeaderTemplateError(f"header {name!r}: template error: {exc}") from None
                self.constant[name] = _check_value(name, value)
            else:
                self.dynamic.append((name, _ENV.from_string(text)))

    def render_into(self, out: dict[str, str], variables: dict) -> None:
        for name, template in self.dynamic:
            try:
                value = template.render(variables)
            except Exception as exc:  # sandbox violations, undefined variables, ...
                raise GatewayError(500, f"header {name!r} could not be rendered: {type(exc).__name__}",
                                   "api_error") from None
            if "\r" in value or "\n" in value:
                raise GatewayError(500, f"header {name!r} rendered a value with CR/LF; not sent", "api_error")
            out[name] = value


class _RequestVars:
    __slots__ = ("id",)

    def __init__(self, request_id: str):
        self.id = request_id


class RenderHeaders:
    """Builds ``ctx.upstream_headers``: protocol headers, spec headers (a provider's replace global
    ones of the same name), then auth last so that no template can override the key header."""

    name = "render_headers"
    __slots__ = ("provider_name", "fmt", "auth", "templates", "client_headers", "base", "needs_vars")

    def __init__(self, provider_name: str, fmt: str, auth: str, global_headers: dict[str, str],
                 provider_headers: dict[str, str], client_headers: list[str]):
        self.provider_name = provider_name
        self.fmt = fmt
        self.auth = auth
        # A provider's header replaces a global one of the same name (case-insensitive).
        merged = {k.lower(): (k, v) for k, v in global_headers.items()}
        merged.update({k.lower(): (k, v) for k, v in provider_headers.items()})
        self.templates = HeaderSet(dict(merged.values()))
        self.client_headers = tuple(h.lower() for h in client_headers)
        self.base = {"content-type": "application/json", **self.templates.constant}
        self.needs_vars = bool(self.templates.dynamic)

    async def run(self, ctx) -> None:
        out = dict(self.base)
        if self.fmt == "anthropic":
            h = ctx.headers
            for name in ANTHROPIC_FORWARD:
                value = h.get(name)
                if value:
                    out[name] = value
            out.setdefault("anthropic-version", "2023-06-01")
        if self.needs_vars:
            variables = {
                "request": _RequestVars(ctx.request_id),
                "provider": self.provider_name,
                "model": ctx.model,
                "requested_model": ctx.requested_model,
                "headers": {n: ctx.headers.get(n, "") for n in self.client_headers},
            }
            self.templates.render_into(out, variables)
        ctx.upstream_headers = out
        set_auth(out, self.auth, ctx.api_key)


def set_auth(headers: dict[str, str], auth: str, key: str | None) -> None:
    if key is None:
        return
    if auth == "bearer":
        headers["authorization"] = "Bearer " + key
    else:  # "x-api-key" or "api-key"
        headers[auth] = key

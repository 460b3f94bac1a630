"""Upstream headers: auth, protocol headers and the spec's jinja2 header templates.

Header templates run in a jinja2 sandbox that knows only these variables (not even jinja2's
globals such as ``range``):

* ``request`` — a mapping with ``id`` only (``{{ request.id }}``),
* ``provider``, ``model``, ``requested_model`` — strings,
* ``headers`` — the client headers the provider lists in ``client_headers`` (lower-cased names,
  ``""`` when the client did not send one).

A template may not load other templates (``{% include %}``, ``{% import %}``, ``{% extends %}``)
and renders at most ``MAX_VALUE`` characters. ``check_template`` applies these rules for
validation; compilation applies the same ones. A template without variables is rendered once at
compile time, so its failure is a spec error; the others are rendered per request, where a failure
answers 500 and a client header value with control characters (CR, LF, NUL, ...) answers 400.
"""
from __future__ import annotations

import re

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment, SecurityError

from .errors import GatewayError, invalid_request

VARIABLES = ("request", "provider", "model", "requested_model", "headers")
MAX_VALUE = 8192  # characters of one rendered header value
_MAX_EXPONENT = 1024
_LOADING = {nodes.Extends: "extends", nodes.Include: "include", nodes.Import: "import",
            nodes.FromImport: "from ... import"}
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but TAB

# Client headers an Anthropic passthrough forwards as they are.
ANTHROPIC_FORWARD = ("anthropic-version", "anthropic-beta")


class HeaderTemplateError(ValueError):
    """Why a header template is not allowed, or failed. ``reason`` leaves out ``detail`` (the
    underlying error's text, which may quote a client header's value) for what clients see."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class _HeaderEnvironment(SandboxedEnvironment):
    """jinja2's sandbox without globals, and with the operators that build a huge value from small
    operands bounded: ``*`` repeating a string or list, and ``**``. (An intercepted operator is
    also never folded at parse time, so ``{{ 9 ** 9 ** 9 }}`` cannot stall compilation.)"""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self):
        super().__init__(undefined=StrictUndefined, autoescape=False)
        self.globals.clear()

    def call_binop(self, context, operator, left, right):
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > _MAX_EXPONENT:
            raise SecurityError(f"exponent larger than {_MAX_EXPONENT}")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(times, int) \
                        and len(seq) * times > MAX_VALUE:
                    raise SecurityError(f"'*' would build a value longer than {MAX_VALUE}")
        return super().call_binop(context, operator, left, right)


_ENV = _HeaderEnvironment()


def compile_template(text: str) -> tuple[Template, bool]:
    """``text`` compiled, and whether it is constant (uses no variable); HeaderTemplateError says
    why it is not an allowed header template."""
    try:
        ast = _ENV.parse(text)
    except TemplateSyntaxError as exc:
        raise HeaderTemplateError(f"invalid jinja2 template: {exc.message}") from None
    for node_type, tag in _LOADING.items():
        if next(ast.find_all(node_type), None) is not None:
            raise HeaderTemplateError(f"{{% {tag} %}} is not allowed in a header template")
    names = meta.find_undeclared_variables(ast)
    unknown = sorted(names.difference(VARIABLES))
    if unknown:
        raise HeaderTemplateError(
            f"unknown variable{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"header templates may use {', '.join(VARIABLES)}")
    return _ENV.from_string(ast), not names


def render_value(template: Template, variables: dict) -> str:
    """The header value ``template`` renders; HeaderTemplateError when it fails, grows past
    ``MAX_VALUE`` characters (rendering stops there) or contains control characters."""
    pieces: list[str] = []
    size = 0
    try:
        for piece in template.generate(variables):
            size += len(piece)
            if size > MAX_VALUE:
                raise HeaderTemplateError(f"renders more than {MAX_VALUE} characters")
            pieces.append(piece)
    except HeaderTemplateError:
        raise
    except Exception as exc:  # sandbox violations, undefined names, overflows, ...
        raise HeaderTemplateError(f"cannot be rendered ({type(exc).__name__})", str(exc)) from None
    value = "".join(pieces)
    if _CONTROL.search(value):
        raise HeaderTemplateError("renders a value with control characters (CR, LF, NUL, ...)")
    return value


def check_template(text: str) -> str | None:
    """Why ``text`` is not an allowed header template (a constant one is rendered), or None."""
    try:
        template, constant = compile_template(text)
        if constant:
            render_value(template, {})
    except HeaderTemplateError as exc:
        return str(exc)
    return None


def client_header(headers, name: str) -> str:
    """A client header's value ("" when absent); 400 when it holds control characters."""
    value = headers.get(name, "")
    if _CONTROL.search(value):
        raise invalid_request(f"header {name!r} contains control characters")
    return value


class HeaderSet:
    """Compiled header templates: constant ones pre-rendered, the rest kept as templates."""

    __slots__ = ("constant", "dynamic")

    def __init__(self, templates: dict[str, str]):
        self.constant: dict[str, str] = {}
        self.dynamic: list[tuple[str, Template]] = []
        for name, text in templates.items():
            try:
                template, constant = compile_template(text)
                if constant:
                    self.constant[name] = render_value(template, {})
                else:
                    self.dynamic.append((name, template))
            except HeaderTemplateError as exc:
                raise HeaderTemplateError(f"header {name!r}: {exc}") from None

    def render_into(self, out: dict[str, str], variables: dict) -> None:
        for name, template in self.dynamic:
            try:
                out[name] = render_value(template, variables)
            except HeaderTemplateError as exc:
                raise GatewayError(500, f"header {name!r} {exc.reason}; not sent", "api_error") from None


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
        h = ctx.headers
        if self.fmt == "anthropic":
            for name in ANTHROPIC_FORWARD:
                value = client_header(h, name)
                if value:
                    out[name] = value
            out.setdefault("anthropic-version", "2023-06-01")
        if self.needs_vars:
            variables = {
                "request": {"id": ctx.request_id},
                "provider": self.provider_name,
                "model": ctx.model,
                "requested_model": ctx.requested_model,
                "headers": {n: client_header(h, n) for n in self.client_headers},
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

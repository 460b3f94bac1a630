"""Routes: request-feature rules that pick a target (and fallbacks) before alias resolution.

A route is ``{name?, match: {...}, to, fallbacks?}``; the first route whose every given condition
holds wins. Conditions (all optional):

* ``model``: glob (fnmatch) on the requested model; case-insensitive, ``-``/``_`` equivalent;
* ``headers``: ``{name: glob}``; header names case-insensitive, values matched case-insensitively;
  a missing header never matches;
* ``thinking``: bool, the body has ``thinking: {type: enabled}``;
* ``tools``: bool, the body has a non-empty ``tools`` list;
* ``min_tools`` / ``max_tools``: inclusive bounds on the number of tools;
* ``min_input_tokens``: estimated input tokens (``token_estimate.estimate_tokens``, the count
  ``count_tokens`` gives; computed only when some route uses it) at least this many;
* ``beta``: glob on the ``anthropic-beta`` header (the whole value or any comma-separated item).

``to`` and ``fallbacks`` entries resolve through the AliasIndex once, at build time.
"""
from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from vandamme.sources import SourceMap, SpecError, SpecErrors

from .aliases import AliasIndex, Resolution, normalize
from .token_estimate import estimate_tokens

MATCH_KEYS = ("model", "headers", "thinking", "tools", "min_tools", "max_tools", "beta",
              "min_input_tokens")


def compile_glob(pattern: str) -> re.Pattern:
    return re.compile(fnmatch.translate(pattern), re.IGNORECASE | re.DOTALL)


# --------------------------------------------------------------------------- features
def _lower_headers(headers: Any) -> Any:
    """A case-insensitive view: plain dicts are lower-cased; CIMultiDict-like objects pass."""
    if headers is None:
        return {}
    if isinstance(headers, dict):
        return {str(k).lower(): v for k, v in headers.items()}
    return headers


class RequestFeatures:
    """What routes look at, computed once per request; input tokens only on first use."""

    __slots__ = ("model", "thinking", "tools", "tool_count", "beta", "headers", "_body",
                 "_tokens")

    def __init__(self, model: str = "", thinking: bool = False, tool_count: int = 0,
                 beta: str = "", headers: Any = None, body: dict | None = None,
                 tokens: int | None = None):
        self.model = model
        self.thinking = thinking
        self.tool_count = tool_count
        self.tools = tool_count > 0
        self.beta = beta
        self.headers = _lower_headers(headers)
        self._body = body
        self._tokens = tokens

    @classmethod
    def from_body(cls, body: Mapping[str, Any] | None, headers: Any = None,
                  tokens: int | None = None) -> "RequestFeatures":
        """``tokens`` overrides the estimate (``vandamme explain --tokens N``)."""
        body = body or {}
        model = body.get("model")
        thinking = body.get("thinking")
        tools = body.get("tools")
        hdrs = _lower_headers(headers)
        beta = hdrs.get("anthropic-beta") or ""
        return cls(model=model if isinstance(model, str) else "",
                   thinking=isinstance(thinking, dict) and thinking.get("type") == "enabled",
                   tool_count=len(tools) if isinstance(tools, list) else 0,
                   beta=beta if isinstance(beta, str) else str(beta),
                   headers=hdrs, body=dict(body) if not isinstance(body, dict) else body,
                   tokens=tokens)

    @classmethod
    def from_head(cls, head: Any, headers: Any = None, body: Any = None) -> "RequestFeatures":
        """Features from the request head (vandamme.transforms.request_stages.RequestHead); ``body`` is a
        callable giving the whole decoded body, used only if a route asks for input tokens."""
        hdrs = _lower_headers(headers)
        thinking = head.thinking
        return cls(model=head.model, thinking=thinking is not None and thinking.type == "enabled",
                   tool_count=len(head.tools) if head.tools else 0,
                   beta=str(hdrs.get("anthropic-beta") or ""), headers=hdrs, body=body)

    @property
    def input_tokens(self) -> int:
        if self._tokens is None:
            b = self._body
            if callable(b):
                b = self._body = b()
            self._tokens = estimate_tokens(b or {})
        return self._tokens

    def header(self, name: str) -> str | None:
        v = self.headers.get(name.lower())
        return None if v is None else str(v)


# --------------------------------------------------------------------------- conditions
@dataclass(frozen=True, slots=True)
class Condition:
    key: str  # e.g. "model", "headers.x-team"
    expected: Any
    test: Callable[[RequestFeatures], bool]
    actual: Callable[[RequestFeatures], Any]

    def describe_failure(self, f: RequestFeatures) -> str:
        got = self.actual(f)
        if self.key in ("min_tools", "min_input_tokens"):
            return f"{self.key}: {got} < {self.expected}"
        if self.key == "max_tools":
            return f"{self.key}: {got} > {self.expected}"
        if isinstance(self.expected, bool):
            return f"{self.key}: is {str(got).lower()}, route wants {str(self.expected).lower()}"
        if got is None or got == "":
            return f"{self.key}: missing, route wants '{self.expected}'"
        return f"{self.key}: '{got}' does not match '{self.expected}'"


def _glob_test(rx: re.Pattern, get: Callable[[RequestFeatures], Any]) -> Callable[[RequestFeatures], bool]:
    def test(f: RequestFeatures) -> bool:
        v = get(f)
        return v is not None and rx.match(v) is not None
    return test


def _beta_test(rx: re.Pattern) -> Callable[[RequestFeatures], bool]:
    def test(f: RequestFeatures) -> bool:
        b = f.beta
        if not b:
            return False
        if rx.match(b):
            return True
        return any(rx.match(item.strip()) for item in b.split(","))
    return test


def _conditions(match: Mapping[str, Any]) -> list[Condition]:
    conds: list[Condition] = []
    for key in MATCH_KEYS:  # fixed evaluation order: cheapest first, token estimate last
        if key not in match or match[key] is None:
            continue
        want = match[key]
        if key == "model":
            rx = compile_glob(normalize(str(want)))
            get = lambda f: normalize(f.model)  # noqa: E731
            conds.append(Condition("model", want, _glob_test(rx, get), lambda f: f.model))
        elif key == "headers":
            for hname, glob in (want or {}).items():
                h = str(hname).lower()
                get = (lambda h: lambda f: f.header(h))(h)
                conds.append(Condition(f"headers.{h}", glob, _glob_test(compile_glob(str(glob)), get), get))
        elif key == "thinking":
            w = bool(want)
            conds.append(Condition("thinking", w, (lambda w: lambda f: f.thinking is w)(w),
                                   lambda f: f.thinking))
        elif key == "tools":
            w = bool(want)
            conds.append(Condition("tools", w, (lambda w: lambda f: f.tools is w)(w), lambda f: f.tools))
        elif key == "min_tools":
            n = int(want)
            conds.append(Condition("min_tools", n, (lambda n: lambda f: f.tool_count >= n)(n),
                                   lambda f: f.tool_count))
        elif key == "max_tools":
            n = int(want)
            conds.append(Condition("max_tools", n, (lambda n: lambda f: f.tool_count <= n)(n),
                                   lambda f: f.tool_count))
        elif key == "beta":
            conds.append(Condition("beta", want, _beta_test(compile_glob(str(want))), lambda f: f.beta))
        elif key == "min_input_tokens":
            n = int(want)
            conds.append(Condition("min_input_tokens", n, (lambda n: lambda f: f.input_tokens >= n)(n),
                                   lambda f: f.input_tokens))
    return conds


# --------------------------------------------------------------------------- routes
@dataclass(frozen=True, slots=True)
class Route:
    index: int
    name: str
    conditions: tuple[Condition, ...]
    to: str  # as written
    target: Resolution  # `to` resolved through the alias index
    fallbacks: tuple[tuple[str, Resolution], ...]  # (as written, resolved)
    source: str
    match_spec: dict = field(default_factory=dict)

    def matches(self, f: RequestFeatures) -> bool:
        for c in self.conditions:
            if not c.test(f):
                return False
        return True

    @property
    def targets(self) -> tuple[tuple[str, str], ...]:
        """[(provider, model), ...]: primary then fallbacks."""
        return ((self.target.provider, self.target.model),) + tuple(
            (r.provider, r.model) for _, r in self.fallbacks)


@dataclass(frozen=True, slots=True)
class RouteMatch:
    route: Route

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def index(self) -> int:
        return self.route.index

    @property
    def provider(self) -> str:
        return self.route.target.provider

    @property
    def model(self) -> str:
        return self.route.target.model

    @property
    def resolution(self) -> Resolution:
        return self.route.target

    @property
    def targets(self) -> tuple[tuple[str, str], ...]:
        return self.route.targets


@dataclass(frozen=True, slots=True)
class RuleCheck:
    """One route as seen by explain."""

    index: int
    name: str
    source: str
    matched: bool
    failed: str | None  # first failing condition, described
    checks: tuple[tuple[str, bool], ...]  # (condition key, held?) for every condition
    to: str
    target: str

    def as_dict(self) -> dict:
        return {"index": self.index, "name": self.name, "source": self.source,
                "matched": self.matched, "failed": self.failed,
                "checks": [{"condition": k, "ok": ok} for k, ok in self.checks],
                "to": self.to, "target": self.target}


class Router:
    __slots__ = ("routes", "uses_tokens")

    def __init__(self, routes: tuple[Route, ...] = ()):
        self.routes = routes
        self.uses_tokens = any(c.key == "min_input_tokens" for r in routes for c in r.conditions)

    @classmethod
    def build(cls, data: Mapping[str, Any], sources: SourceMap | None, alias_index: AliasIndex) -> "Router":
        sources = sources if sources is not None else SourceMap()
        routes: list[Route] = []
        errors: list[SpecError] = []
        for i, r in enumerate(data.get("routes") or []):
            path = ("routes", i)
            match = r.get("match") or {}
            unknown = [k for k in match if k not in MATCH_KEYS]
            for k in unknown:
                errors.append(SpecError(f"unknown match condition '{k}' (known: {', '.join(MATCH_KEYS)})",
                                        sources.nearest(path + ("match", k)), path + ("match", k)))
            to = r.get("to")
            if not isinstance(to, str) or not to:
                errors.append(SpecError("route needs a 'to' target", sources.nearest(path), path + ("to",)))
                continue
            try:
                conds = _conditions(match)
            except (TypeError, ValueError, re.error) as exc:
                errors.append(SpecError(f"bad match condition: {exc}", sources.nearest(path + ("match",)),
                                        path + ("match",)))
                continue
            fallbacks = tuple((str(fb), alias_index.resolve(str(fb))) for fb in (r.get("fallbacks") or []))
            routes.append(Route(index=i, name=str(r.get("name") or f"routes[{i}]"),
                                conditions=tuple(conds), to=to, target=alias_index.resolve(to),
                                fallbacks=fallbacks, source=str(sources.nearest(path)),
                                match_spec=dict(match)))
        if errors:
            raise SpecErrors(errors)
        return cls(tuple(routes))

    def match(self, features: RequestFeatures) -> RouteMatch | None:
        for r in self.routes:
            if r.matches(features):
                return RouteMatch(r)
        return None

    def explain(self, features: RequestFeatures) -> list[RuleCheck]:
        """Every route, whether it matched and the first failing condition (all are evaluated)."""
        out: list[RuleCheck] = []
        for r in self.routes:
            checks = tuple((c.key, bool(c.test(features))) for c in r.conditions)
            failed = next((c.describe_failure(features) for c, (_, ok) in zip(r.conditions, checks) if not ok),
                          None)
            out.append(RuleCheck(r.index, r.name, r.source, failed is None, failed, checks, r.to,
                                 r.target.target))
        return out

    def __len__(self) -> int:
        return len(self.routes)

    def __bool__(self) -> bool:
        return True

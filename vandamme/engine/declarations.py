"""Middleware declarations: the ``middleware:`` lists of a spec, checked against the stage registry.

A list stands at the top level (every request), in a route (requests that route matches) and in a
provider (that provider's requests). An item is a stage name, a one-key mapping
``{name: {config}}``, or ``{use: "package.module:Class", with: {config}}``. Each is checked here:
the name is known (with a did-you-mean), the config is valid for the stage's schema (defaults
applied), and a stage that consumes a provider's wire format sits where that format is. Every
problem is a SpecError at the item's ``file:line:col`` with its key path.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

from jsonschema import Draft202012Validator

from vandamme.transforms.registry import Registry, StageLoadError, StageSpec, default_registry, import_stage
from vandamme.kernel import ANTHROPIC, OPENAI
from vandamme.sources import Path, Source, SourceMap, SpecError

from .validation import did_you_mean, schema_errors  # the spec's own error wording, for stage configs too

GLOBAL = "global"


@dataclass(frozen=True, eq=False)
class Declared:
    """One declared middleware: its stage, its config (defaults applied) and where it was declared."""

    spec: StageSpec
    config: Mapping[str, Any]
    path: Path
    source: Source
    scope: str  # "global", "route <name>" or "provider <name>"

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class Declarations:
    """Every middleware list of a spec, checked: global, per route index, per provider."""

    global_: tuple[Declared, ...] = ()
    routes: Mapping[int, tuple[Declared, ...]] = None  # type: ignore[assignment]
    providers: Mapping[str, tuple[Declared, ...]] = None  # type: ignore[assignment]

    def route(self, index: int | None) -> tuple[Declared, ...]:
        return (self.routes or {}).get(index, ()) if index is not None else ()

    def provider(self, name: str) -> tuple[Declared, ...]:
        return (self.providers or {}).get(name, ())


def apply_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with the ``default`` of every missing property filled in, recursively."""
    if not isinstance(value, dict) or not isinstance(schema, Mapping):
        return value
    out = dict(value)
    for key, sub in (schema.get("properties") or {}).items():
        if key not in out and isinstance(sub, Mapping) and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = apply_defaults(sub, out[key])
    return out


def _lists(data: Mapping[str, Any]) -> Iterator[tuple[str, Path, Any, str | None]]:
    """(scope, path of the list, the list, provider format or None) for every middleware list."""
    yield GLOBAL, ("middleware",), data.get("middleware"), None
    for i, route in enumerate(data.get("routes") or ()):
        if isinstance(route, Mapping):
            yield f"route {route.get('name') or i}", ("routes", i, "middleware"), route.get("middleware"), None
    for pname, prov in (data.get("providers") or {}).items():
        if isinstance(prov, Mapping):
            yield f"provider {pname}", ("providers", pname, "middleware"), prov.get("middleware"), prov.get("format")


def _item(item: Any, path: Path, registry: Registry, errors: list[SpecError],
          sources: SourceMap) -> tuple[StageSpec, Any, Path] | None:
    """(stage spec, raw config, path of the config) for one list item, or None after an error."""
    here = sources.nearest(path)
    if isinstance(item, str):
        name, config, cpath = item, None, path
    elif isinstance(item, Mapping) and "use" in item:
        extra = sorted(set(item) - {"use", "with"})
        if extra:
            sub = path + (extra[0],)
            errors.append(SpecError(f"unknown key '{extra[0]}' beside 'use' (expected 'with')",
                                    sources.nearest(sub), sub))
            return None
        target = item["use"]
        if not isinstance(target, str):
            errors.append(SpecError("use: expected 'package.module:ClassName'", here, path + ("use",)))
            return None
        try:
            spec = import_stage(target)
        except StageLoadError as exc:
            sub = path + ("use",)
            errors.append(SpecError(f"cannot load stage {target!r}: {exc}", sources.nearest(sub), sub))
            return None
        return spec, item.get("with"), path + ("with",)
    elif isinstance(item, Mapping) and len(item) == 1:
        name, config = next(iter(item.items()))
        cpath = path + (name,)
    else:
        errors.append(SpecError("expected a stage name, a one-key mapping {name: config}, or "
                                "{use: 'package.module:Class', with: config}", here, path))
        return None
    name = str(name)
    spec = registry.get(name)
    if spec is None:
        if name in registry.broken:
            errors.append(SpecError(registry.broken[name], sources.nearest(cpath), cpath))
        else:
            known = registry.declarable()
            errors.append(SpecError(f"unknown middleware '{name}'{did_you_mean(name, known)} "
                                    f"(known: {', '.join(sorted(known))}; or use: 'package.module:Class')",
                                    sources.nearest(cpath), cpath))
        return None
    if not spec.declarable:
        errors.append(SpecError(f"'{name}' is a built-in pipeline stage, not middleware: it is placed "
                                f"by the compiler", sources.nearest(cpath), cpath))
        return None
    return spec, config, cpath


def _config(spec: StageSpec, raw: Any, cpath: Path, sources: SourceMap,
            errors: list[SpecError]) -> Mapping[str, Any] | None:
    config = {} if raw is None else raw
    found = [err for e in Draft202012Validator(spec.config_schema).iter_errors(config)
             for err in schema_errors(e, sources, cpath)]
    if found:
        errors.extend(found)
        return None
    return apply_defaults(spec.config_schema, config)


def _placement(spec: StageSpec, scope: str, fmt: str | None, here: Source, path: Path) -> SpecError | None:
    if spec.consumes == OPENAI and fmt != OPENAI:
        where = (f"provider '{scope.split(' ', 1)[1]}' has format {fmt}" if fmt is not None
                 else f"it is declared {'globally' if scope == GLOBAL else 'on a ' + scope}")
        return SpecError(f"'{spec.name}' consumes the OpenAI wire format, so it can only be declared "
                         f"under an OpenAI-format provider's middleware; {where}", here, path)
    if spec.consumes not in (ANTHROPIC, OPENAI):  # pragma: no cover - the registry checks it
        return SpecError(f"'{spec.name}' consumes unknown format {spec.consumes!r}", here, path)
    return None


def declarations(data: Mapping[str, Any], sources: SourceMap,
                 registry: Registry | None = None) -> tuple[Declarations, list[SpecError]]:
    """Every middleware list of ``data`` checked; (declarations, errors)."""
    registry = registry or default_registry()
    errors: list[SpecError] = []
    by_scope: dict[Path, tuple[Declared, ...]] = {}
    for scope, lpath, items, fmt in _lists(data):
        if not isinstance(items, list):
            continue  # absent, or a type error the schema reports
        out = []
        for i, item in enumerate(items):
            path = lpath + (i,)
            found = _item(item, path, registry, errors, sources)
            if found is None:
                continue
            spec, raw, cpath = found
            config = _config(spec, raw, cpath, sources, errors)
            if config is None:
                continue
            here = sources.nearest(path)
            problem = _placement(spec, scope, fmt, here, path)
            if problem is not None:
                errors.append(problem)
                continue
            out.append(Declared(spec, config, path, here, scope))
        by_scope[lpath] = tuple(out)
    decl = Declarations(
        global_=by_scope.get(("middleware",), ()),
        routes={p[1]: v for p, v in by_scope.items() if p[0] == "routes"},
        providers={p[1]: v for p, v in by_scope.items() if p[0] == "providers"},
    )
    return decl, errors


def in_middleware_list(path: Path) -> bool:
    """Whether ``path`` lies inside an item of a middleware list (checked here, not by the schema)."""
    path = tuple(path)
    for i, part in enumerate(path[:-1]):
        if part == "middleware" and isinstance(path[i + 1], int):
            return True
    return False


__all__ = ["Declared", "Declarations", "apply_defaults", "declarations", "in_middleware_list"]

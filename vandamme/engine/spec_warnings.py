"""Warnings: what a valid spec refers to that this environment cannot serve.

A route target or fallback, or an alias, that names a provider inactive here (no key, or
``enabled: false``), and an inactive default provider. The spec is valid and the gateway runs
(a request that needs such a provider fails, or falls to the next candidate), so these are
warnings, not errors: ``vandamme validate`` prints them and fails on them only with
``--deny-warnings``. References are read as declared (every provider counted as configured: what
the spec means), and checked against the compiled providers' ``active``.

A provider-scoped alias whose own provider is inactive is not reported: it is switched off with
its provider (the default specs carry such aliases for every preset).
"""
from __future__ import annotations

from typing import Any

from vandamme.transforms.aliases import GLOBAL, Resolution
from vandamme.transforms.resolve_stage import inactive_message
from vandamme.sources import Path, SpecError

from .explain import declared_resolver
from .loader import LoadedSpec


def inactive_provider_warnings(loaded: LoadedSpec, gateway: Any) -> list[SpecError]:
    """One SpecError (at the referring key) per reference to a provider inactive here: the default
    provider, then routes in order, then aliases in scope priority."""
    providers = gateway.providers
    sources = loaded.sources
    declared = declared_resolver(gateway)
    out: list[SpecError] = []

    def inactive(name: str) -> bool:
        p = providers.get(name)
        return p is not None and not p.active

    def warn(path: Path, what: str, provider: str) -> None:
        out.append(SpecError(f"{what}; {inactive_message(provider, providers[provider])}",
                             sources.nearest(path), path))

    default = declared.alias_index.default_provider
    if inactive(default):
        warn(("default_provider",), f"models no route or alias resolves go to '{default}'", default)

    for route in declared.router.routes:  # type: ignore[union-attr]
        named: list[tuple[Path, str, Resolution]] = [(("routes", route.index, "to"), "targets", route.target)]
        named += [(("routes", route.index, "fallbacks", j), "falls back to", res)
                  for j, (_, res) in enumerate(route.fallbacks)]
        for path, verb, res in named:
            if inactive(res.provider):
                warn(path, f"route '{route.name}' {verb} {res.target}", res.provider)

    for alias in declared.alias_index.records(include_inactive=True):
        if alias.scope != GLOBAL and inactive(alias.scope):
            continue  # switched off with its own provider
        if inactive(alias.provider):
            path = ("aliases", alias.name) if alias.scope == GLOBAL else \
                ("providers", alias.scope, "aliases", alias.name)
            warn(path, f"alias '{alias.name}' resolves to {alias.target}", alias.provider)
    return out

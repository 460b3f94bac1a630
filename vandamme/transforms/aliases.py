"""Model aliases: how a requested model name becomes ``(provider, upstream model)``.

Rules (see docs/routing.md), applied to the raw model string the client sent:

* names compare case-insensitively, and ``-`` and ``_`` are the same character;
* (a) ``provider:model`` whose prefix is a known provider is *explicit*: the provider is fixed and
  only the model part is looked up, exactly, among that provider's aliases;
* (b) an *exact* alias match (global or provider-scoped) comes next;
* (c) then every alias whose normalised name is a *substring* of the normalised model, longest
  name first; ties go by scope priority (the default provider's aliases, then the other providers
  in spec order, then global aliases) and then alphabetically;
* (d) otherwise the default provider gets the model unchanged.

Exact matches use the same scope priority when the same name exists in several scopes.

An alias target may name another alias: ``p:name`` looks in provider ``p``'s aliases; a bare name
looks in the alias's own scope first, then among global aliases (and a global alias's bare target
that is no global alias is looked up, exactly, among the active providers' aliases in scope
priority). Everything that does not depend on the request is computed in ``build``: normalised
names, each alias's final target, and the substring candidates in tie-break order. ``resolve`` is
memoised in a bounded LRU keyed by the raw model string.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from vandamme.sources import SourceMap, SpecError, SpecErrors

GLOBAL = "global"
MAX_DEPTH = 16  # alias chains longer than this are treated as cycles

KIND_EXPLICIT = "explicit"
KIND_EXACT = "exact_alias"
KIND_SUBSTRING = "substring_alias"
KIND_DEFAULT = "default"


def normalize(name: str) -> str:
    """Case-insensitive, ``_`` == ``-``."""
    return name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class Step:
    """One resolution step: what matched and why.

    ``kind`` is one of explicit / exact_alias / substring_alias / default (the resolve stage also
    records a ``route`` step when a route picked the target). ``alias`` is the alias name (None for
    explicit/default), ``scope`` is ``"global"`` or a provider name, ``target`` is what the step
    produced (``provider:model`` for the last step of a chain, the raw alias value otherwise),
    ``source`` is where the alias (or provider) was declared, ``why`` a human sentence.
    """

    kind: str
    alias: str | None
    scope: str | None
    target: str
    source: str
    why: str = ""

    def as_dict(self) -> dict:
        return {"kind": self.kind, "alias": self.alias, "scope": self.scope,
                "target": self.target, "source": self.source, "why": self.why}


@dataclass(frozen=True, slots=True)
class Candidate:
    """An alias that also matched (as a substring) but lost the tie-break, or was skipped."""

    alias: str
    scope: str
    target: str  # provider:model it would have given ("" when it could not resolve)
    source: str
    reason: str = ""

    def as_dict(self) -> dict:
        return {"alias": self.alias, "scope": self.scope, "target": self.target,
                "source": self.source, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Resolution:
    provider: str
    model: str
    steps: tuple[Step, ...]
    candidates: tuple[Candidate, ...] = ()  # other substring matches, best first
    skipped: tuple[Candidate, ...] = ()  # matches ignored because their provider is inactive

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"

    @property
    def kind(self) -> str:
        return self.steps[0].kind if self.steps else KIND_DEFAULT


@dataclass(frozen=True, slots=True)
class AliasEntry:
    """One declared alias, compiled."""

    name: str
    norm: str
    scope: str  # "global" or provider name
    value: str  # raw target as written
    source: str
    provider: str  # final provider after following the chain
    model: str  # final model after following the chain
    chain: tuple[Step, ...]  # steps after the first hop (the alias chain)
    rank: int  # scope priority: 0 = default provider ... len(providers) = global
    active: bool

    @property
    def target(self) -> str:
        return f"{self.provider}:{self.model}"

    def as_dict(self) -> dict:
        return {"name": self.name, "scope": self.scope, "target": self.target,
                "provider": self.provider, "model": self.model, "source": self.source}


class AliasIndex:
    """Compiled aliases for one spec. Immutable after ``build``; ``resolve`` is thread-safe."""

    __slots__ = ("default_provider", "providers", "active", "_provider_norm", "_by_scope",
                 "_exact", "_exact_inactive", "_substring", "_all", "_sources", "_cached",
                 "cache_size")

    def __init__(self) -> None:  # use AliasIndex.build
        self.default_provider = ""
        self.providers: tuple[str, ...] = ()
        self.active: frozenset[str] = frozenset()
        self._provider_norm: dict[str, str] = {}
        self._by_scope: dict[str, dict[str, tuple[str, str, str]]] = {}
        self._exact: dict[str, AliasEntry] = {}
        self._exact_inactive: dict[str, list[AliasEntry]] = {}
        self._substring: tuple[AliasEntry, ...] = ()
        self._all: tuple[AliasEntry, ...] = ()
        self._sources: SourceMap = SourceMap()
        self.cache_size = 0
        self._cached: Any = None

    # ------------------------------------------------------------------ build
    @classmethod
    def build(cls, data: Mapping[str, Any], sources: SourceMap | None = None,
              active: Iterable[str] | None = None, cache_size: int = 4096) -> "AliasIndex":
        self = cls()
        sources = sources if sources is not None else SourceMap()
        self._sources = sources
        providers_data: Mapping[str, Any] = data.get("providers") or {}
        self.providers = tuple(providers_data)
        self.default_provider = data.get("default_provider") or (self.providers[0] if self.providers else "")
        self.active = frozenset(self.providers if active is None else active)
        self._provider_norm = {normalize(p): p for p in self.providers}

        # scope priority: default provider, other providers in spec order, global last
        order = [self.default_provider] if self.default_provider in providers_data else []
        order += [p for p in self.providers if p != self.default_provider]
        rank = {p: i for i, p in enumerate(order)}
        rank[GLOBAL] = len(order)

        # scope -> norm name -> (raw name, raw value, source); sorted so duplicates after
        # normalisation resolve the same way whatever the dict order
        by_scope: dict[str, dict[str, tuple[str, str, str]]] = {}
        for p in self.providers:
            raw = (providers_data[p] or {}).get("aliases") or {}
            by_scope[p] = self._scope_table(raw, ("providers", p, "aliases"))
        by_scope[GLOBAL] = self._scope_table(data.get("aliases") or {}, ("aliases",))
        self._by_scope = by_scope

        entries: list[AliasEntry] = []
        errors: list[SpecError] = []
        for scope in order + [GLOBAL]:
            for norm, (name, value, src) in by_scope[scope].items():
                try:
                    provider, model, chain = self._follow(scope, name, value, ())
                except _ChainError as exc:
                    path = ("aliases", name) if scope == GLOBAL else ("providers", scope, "aliases", name)
                    errors.append(SpecError(str(exc), sources.nearest(path), path))
                    continue
                is_active = provider in self.active and (scope == GLOBAL or scope in self.active)
                entries.append(AliasEntry(name=name, norm=norm, scope=scope, value=value, source=src,
                                          provider=provider, model=model, chain=chain,
                                          rank=rank[scope], active=is_active))
        if errors:
            raise SpecErrors(errors)

        key = lambda e: (-len(e.norm), e.rank, e.norm, e.name)  # noqa: E731
        entries.sort(key=key)
        self._all = tuple(entries)
        exact: dict[str, AliasEntry] = {}
        inactive: dict[str, list[AliasEntry]] = {}
        for e in entries:  # already in priority order: first one wins
            if e.active:
                exact.setdefault(e.norm, e)
            else:
                inactive.setdefault(e.norm, []).append(e)
        self._exact = exact
        self._exact_inactive = inactive
        self._substring = tuple(e for e in entries if e.norm)
        self.cache_size = max(0, int(cache_size))
        self._cached = functools.lru_cache(maxsize=self.cache_size)(self._resolve)
        return self

    def _scope_table(self, raw: Mapping[str, Any], base: tuple) -> dict[str, tuple[str, str, str]]:
        table: dict[str, tuple[str, str, str]] = {}
        for name in sorted(raw, key=lambda n: (normalize(str(n)), str(n))):
            norm = normalize(str(name))
            if norm in table:
                continue
            table[norm] = (str(name), str(raw[name]), str(self._sources.nearest(base + (name,))))
        return table

    def _split_provider(self, text: str) -> tuple[str | None, str]:
        """``"openai:gpt-4o"`` -> ("openai", "gpt-4o") when the prefix is a known provider."""
        head, sep, tail = text.partition(":")
        if sep:
            p = self._provider_norm.get(normalize(head))
            if p is not None:
                return p, tail
        return None, text

    def _follow(self, scope: str, name: str, value: str, seen: tuple) -> tuple[str, str, tuple[Step, ...]]:
        """Follow alias ``scope/name`` (whose raw target is ``value``) to (provider, model, chain).

        ``chain`` holds one Step per further alias hop (the first hop is the caller's step)."""
        here = (scope, normalize(name))
        if here in seen or len(seen) >= MAX_DEPTH:
            cycle = " -> ".join(f"{s}:{n}" for s, n in seen + (here,))
            raise _ChainError(f"alias cycle or chain too deep: {cycle}")
        seen = seen + (here,)
        provider, rest = self._split_provider(value)
        norm_rest = normalize(rest)
        if provider is not None:
            hit = self._by_scope[provider].get(norm_rest)
            if hit is not None and (provider, norm_rest) != here:
                return self._hop(provider, hit, seen)
            return provider, rest, ()
        # bare target: same scope first, then global
        for s in (scope, GLOBAL):
            hit = self._by_scope[s].get(norm_rest)
            if hit is not None and (s, norm_rest) != here:
                return self._hop(s, hit, seen)
        if scope == GLOBAL:
            # a global alias naming a provider alias: active providers in scope priority
            order = [self.default_provider] + [p for p in self.providers if p != self.default_provider]
            for p in order:
                if p in self.active and p in self._by_scope:
                    hit = self._by_scope[p].get(norm_rest)
                    if hit is not None:
                        return self._hop(p, hit, seen)
            return self.default_provider, rest, ()
        return scope, rest, ()

    def _hop(self, scope: str, hit: tuple[str, str, str], seen: tuple) -> tuple[str, str, tuple[Step, ...]]:
        name, value, src = hit
        provider, model, chain = self._follow(scope, name, value, seen)
        step = Step(KIND_EXACT, name, scope, value if chain else f"{provider}:{model}", src,
                    f"chained alias '{name}' ({_scope_label(scope)})")
        return provider, model, (step,) + chain

    # ---------------------------------------------------------------- resolve
    def resolve(self, model: str) -> Resolution:
        """Resolve a requested model (memoised; bounded LRU keyed by the raw string)."""
        return self._cached(model)

    def cache_info(self):
        return self._cached.cache_info()

    def cache_clear(self) -> None:
        self._cached.cache_clear()

    def _resolve(self, model: str) -> Resolution:
        # (a) explicit provider:model
        provider, rest = self._split_provider(model)
        if provider is not None:
            src = str(self._sources.nearest(("providers", provider)))
            hit = self._by_scope[provider].get(normalize(rest))
            if hit is not None:
                first = Step(KIND_EXPLICIT, None, provider, f"{provider}:{rest}", src,
                             f"'{provider}' is a configured provider")
                p, m, chain = self._hop(provider, hit, ())
                return Resolution(p, m, (first,) + chain)
            step = Step(KIND_EXPLICIT, None, provider, f"{provider}:{rest}", src,
                        f"'{provider}' is a configured provider; '{rest}' is no alias of it")
            return Resolution(provider, rest, (step,))

        norm = normalize(model)
        # (b) exact alias
        e = self._exact.get(norm)
        if e is not None:
            skipped = tuple(_candidate(x, "provider inactive") for x in self._exact_inactive.get(norm, ())
                            if x.rank < e.rank)
            step = Step(KIND_EXACT, e.name, e.scope, e.value if e.chain else e.target, e.source,
                        f"'{model}' equals alias '{e.name}' ({_scope_label(e.scope)})")
            return Resolution(e.provider, e.model, (step,) + e.chain, skipped=skipped)

        # (c) substring aliases, already sorted longest first / scope priority / alphabetical
        winner: AliasEntry | None = None
        others: list[Candidate] = []
        skipped_l: list[Candidate] = []
        for e in self._substring:
            if len(e.norm) > len(norm) or e.norm not in norm:
                continue
            if not e.active:
                skipped_l.append(_candidate(e, "provider inactive"))
            elif winner is None:
                winner = e
            else:
                others.append(_candidate(e, _lost_reason(winner, e)))
        if winner is not None:
            step = Step(KIND_SUBSTRING, winner.name, winner.scope,
                        winner.value if winner.chain else winner.target, winner.source,
                        f"alias '{winner.name}' ({_scope_label(winner.scope)}) is a substring of '{model}'")
            return Resolution(winner.provider, winner.model, (step,) + winner.chain,
                              tuple(others), tuple(skipped_l))

        # (d) default provider
        p = self.default_provider
        step = Step(KIND_DEFAULT, None, p, f"{p}:{model}",
                    str(self._sources.nearest(("default_provider",))),
                    f"no alias matches '{model}'; default provider '{p}'")
        return Resolution(p, model, (step,), skipped=tuple(skipped_l))

    # ---------------------------------------------------------------- listing
    def records(self, include_inactive: bool = False) -> list[AliasEntry]:
        """Compiled aliases (scope priority order, then name); only usable ones by default."""
        rows = [e for e in self._all if include_inactive or e.active]
        return sorted(rows, key=lambda e: (e.rank, e.norm, e.name))

    def entries(self, include_inactive: bool = False) -> list[dict]:
        """Aliases usable now, as plain dicts ``{name, scope, target, provider, model, source}``
        (scope priority order, then name): the items of GET /v1/aliases' ``data``."""
        return [e.as_dict() for e in self.records(include_inactive)]

    def as_json(self) -> dict:
        """The GET /v1/aliases body: ``{"data": entries()}``."""
        return {"data": self.entries()}

    def __len__(self) -> int:
        return len(self._all)


class _ChainError(Exception):
    pass


def _scope_label(scope: str) -> str:
    return "global" if scope == GLOBAL else f"provider {scope}"


def _candidate(e: AliasEntry, reason: str) -> Candidate:
    return Candidate(e.name, e.scope, e.target, e.source, reason)


def _lost_reason(winner: AliasEntry, e: AliasEntry) -> str:
    if len(e.norm) < len(winner.norm):
        return f"shorter than '{winner.name}'"
    if e.rank > winner.rank:
        return f"same length as '{winner.name}', lower scope priority"
    return f"same length and scope as '{winner.name}', later alphabetically"

"""Alias resolution: every matching rule and tie-break, table-driven, plus properties."""
from __future__ import annotations

import copy
import random

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vandamme.sources import Source, SourceMap, SpecErrors
from vandamme.transforms.aliases import AliasIndex, normalize


def spec(**over):
    data = {
        "default_provider": "openai",
        "providers": {
            "openai": {"format": "openai", "base_url": "https://api.openai.com/v1",
                       "aliases": {"fast": "gpt-4o-mini", "haiku": "gpt-4o-mini", "sonnet": "gpt-4o",
                                   "opus": "o3", "gpt_big": "gpt-4.1"}},
            "anthropic": {"format": "anthropic", "base_url": "https://api.anthropic.com",
                          "aliases": {"haiku": "claude-3-5-haiku-latest", "claude-opus": "claude-opus-4-1",
                                      "smart": "sonnet"}},
            "gemini": {"format": "openai", "base_url": "https://gemini", "aliases": {"flash": "gemini-2.5-flash"}},
        },
        "aliases": {"big": "anthropic:claude-opus-4-1", "cheap": "fast", "pro": "gemini:flash",
                    "Mini": "openai:gpt-4o-mini"},
    }
    data.update(over)
    return data


SOURCES = SourceMap({
    ("aliases", "big"): Source("specs/20-aliases.yaml", 4, 3),
    ("providers", "openai", "aliases", "haiku"): Source("specs/10-providers.yaml", 7, 7),
    ("default_provider",): Source("specs/00-base.yaml", 1, 1),
    ("aliases", "cheap"): Source(env="VDM_ALIAS_CHEAP"),
})


@pytest.fixture(scope="module")
def index():
    return AliasIndex.build(spec(), SOURCES)


@pytest.mark.parametrize("model, provider, upstream, kind", [
    # (b) exact, case-insensitive, -/_ equivalent
    ("fast", "openai", "gpt-4o-mini", "exact_alias"),
    ("FAST", "openai", "gpt-4o-mini", "exact_alias"),
    ("gpt-big", "openai", "gpt-4.1", "exact_alias"),
    ("GPT_BIG", "openai", "gpt-4.1", "exact_alias"),
    ("mini", "openai", "gpt-4o-mini", "exact_alias"),
    ("big", "anthropic", "claude-opus-4-1", "exact_alias"),
    # exact: same name in two providers -> default provider first
    ("haiku", "openai", "gpt-4o-mini", "exact_alias"),
    # alias chains: global bare -> provider alias; global p:name -> provider alias; provider bare -> same scope
    ("cheap", "openai", "gpt-4o-mini", "exact_alias"),
    ("pro", "gemini", "gemini-2.5-flash", "exact_alias"),
    ("smart", "anthropic", "sonnet", "exact_alias"),
    # (c) substring: Claude Code model names land on the default provider's mapping
    ("claude-3-5-haiku-20241022", "openai", "gpt-4o-mini", "substring_alias"),
    ("claude-sonnet-4-5-20250929", "openai", "gpt-4o", "substring_alias"),
    ("claude_3_5_HAIKU_latest", "openai", "gpt-4o-mini", "substring_alias"),
    # longest substring first: "claude-opus" (11) beats "opus" (4) though anthropic is not default
    ("claude-opus-4-1-20250805", "anthropic", "claude-opus-4-1", "substring_alias"),
    ("my-opus-model", "openai", "o3", "substring_alias"),
    # (a) explicit provider:model; model part resolves exactly in that provider
    ("openai:fast", "openai", "gpt-4o-mini", "explicit"),
    ("anthropic:haiku", "anthropic", "claude-3-5-haiku-latest", "explicit"),
    ("Anthropic:claude-3-opus", "anthropic", "claude-3-opus", "explicit"),
    ("gemini:FLASH", "gemini", "gemini-2.5-flash", "explicit"),
    ("openai:big", "openai", "big", "explicit"),  # global aliases are not consulted for explicit
    ("anthropic:claude-opus-4-1-20250805", "anthropic", "claude-opus-4-1-20250805", "explicit"),
    # unknown prefix is not a provider: the whole string goes through
    ("llama3:8b", "openai", "llama3:8b", "default"),
    # (d) default
    ("gpt-4o", "openai", "gpt-4o", "default"),
    ("", "openai", "", "default"),
])
def test_resolve_table(index, model, provider, upstream, kind):
    r = index.resolve(model)
    assert (r.provider, r.model) == (provider, upstream)
    assert r.steps[0].kind == kind
    assert r.kind == kind


def test_steps_record_source_and_scope(index):
    r = index.resolve("claude-3-5-haiku-20241022")
    s = r.steps[0]
    assert (s.alias, s.scope, s.target) == ("haiku", "openai", "openai:gpt-4o-mini")
    assert s.source == "specs/10-providers.yaml:7:7"
    assert "substring" in s.why
    # the other haiku matched too, and lost on scope priority
    assert [(c.alias, c.scope) for c in r.candidates] == [("haiku", "anthropic")]
    assert "scope priority" in r.candidates[0].reason


def test_chain_steps(index):
    r = index.resolve("cheap")
    assert [(s.kind, s.alias, s.scope) for s in r.steps] == [
        ("exact_alias", "cheap", "global"), ("exact_alias", "fast", "openai")]
    assert r.steps[0].source == "env:VDM_ALIAS_CHEAP"
    assert r.steps[-1].target == "openai:gpt-4o-mini"


def test_default_step_source(index):
    r = index.resolve("gpt-4o")
    assert r.steps[0].source == "specs/00-base.yaml:1:1"
    assert r.candidates == () and r.skipped == ()


def providers(*names, aliases=None):
    aliases = aliases or {}
    return {n: {"format": "openai", "base_url": f"https://{n}", "aliases": aliases.get(n, {})} for n in names}


@pytest.mark.parametrize("case, data, model, expect", [
    ("provider order: default first even when listed last",
     {"default_provider": "b", "providers": providers("a", "b", aliases={"a": {"x": "a-x"}, "b": {"x": "b-x"}})},
     "model-x-1", ("b", "b-x")),
    ("provider order: then spec order",
     {"default_provider": "c", "providers": providers("b", "a", "c", aliases={"a": {"x": "a-x"}, "b": {"x": "b-x"}})},
     "model-x-1", ("b", "b-x")),
    ("global aliases last on ties",
     {"default_provider": "a", "providers": providers("a", "b", aliases={"b": {"xy": "b-xy"}}),
      "aliases": {"xy": "a:global-xy"}},
     "the-xy", ("b", "b-xy")),
    ("global alias wins when longer",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"xy": "a-xy"}}),
      "aliases": {"xyz": "a:global-xyz"}},
     "the-xyz", ("a", "global-xyz")),
    ("alphabetical within scope for equal length",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"zz": "a-zz", "mm": "a-mm"}})},
     "zz-mm", ("a", "a-mm")),
    ("exact beats a longer substring",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"opus": "o-exact", "op": "o-sub"}}),
      "aliases": {"opus-4": "a:longer"}},
     "opus", ("a", "o-exact")),
    ("exact beats substring across scopes",
     {"default_provider": "a", "providers": providers("a", "b", aliases={"a": {"son": "a-son"}, "b": {"sonnet": "b-sonnet"}})},
     "sonnet", ("b", "b-sonnet")),
    ("dash/underscore equivalence in substring",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"my_model": "m"}})},
     "prefix-MY-MODEL-suffix", ("a", "m")),
    ("alias chain through provider scope then global",
     {"default_provider": "a", "providers": providers("a", "b", aliases={"a": {"x": "y"}, "b": {"z": "zz"}}),
      "aliases": {"y": "b:z"}},
     "x", ("b", "zz")),
    ("same-scope alias preferred over global for a bare target",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"x": "y", "y": "a-y"}}),
      "aliases": {"y": "a:global-y"}},
     "x", ("a", "a-y")),
    ("self-target is the literal model",
     {"default_provider": "a", "providers": providers("a", aliases={"a": {"gpt-4o": "gpt-4o"}})},
     "gpt-4o", ("a", "gpt-4o")),
    ("no default_provider: first provider",
     {"providers": providers("q", "r")},
     "anything", ("q", "anything")),
])
def test_tie_breaks(case, data, model, expect):
    r = AliasIndex.build(data, SourceMap()).resolve(model)
    assert (r.provider, r.model) == expect, case


def test_inactive_provider_aliases_skipped():
    idx = AliasIndex.build(spec(), SOURCES, active={"anthropic", "gemini"})
    r = idx.resolve("claude-3-5-haiku-20241022")
    assert (r.provider, r.model) == ("anthropic", "claude-3-5-haiku-latest")
    assert [(c.alias, c.scope, c.reason) for c in r.skipped] == [("haiku", "openai", "provider inactive")]
    # exact match in an inactive provider is skipped too
    r = idx.resolve("fast")
    assert (r.kind, r.model) == ("default", "fast")
    assert [(c.alias, c.scope) for c in r.skipped] == [("fast", "openai")]
    # global alias whose target provider is inactive is skipped
    idx2 = AliasIndex.build(spec(), SOURCES, active={"openai"})
    r = idx2.resolve("big")
    assert (r.provider, r.model, r.kind) == ("openai", "big", "default")
    assert [c.alias for c in r.skipped] == ["big"]
    # explicit provider:model of an inactive provider still names it (the stage reports the error)
    assert idx2.resolve("anthropic:haiku").provider == "anthropic"


def test_entries_and_json():
    idx = AliasIndex.build(spec(), SOURCES, active={"openai", "anthropic"})
    rows = idx.records()
    names = [(e.scope, e.name) for e in rows]
    assert idx.entries() == [e.as_dict() for e in rows]
    orjson.dumps({"data": idx.entries()})  # what the server sends
    assert ("gemini", "flash") not in names and ("global", "pro") not in names
    assert names[0][0] == "openai" and names[-1][0] == "global"
    big = next(e for e in rows if e.name == "big")
    assert big.as_dict() == {"name": "big", "scope": "global", "target": "anthropic:claude-opus-4-1",
                             "provider": "anthropic", "model": "claude-opus-4-1",
                             "source": "specs/20-aliases.yaml:4:3"}
    body = idx.as_json()
    assert set(body) == {"data"}
    assert all(set(d) == {"name", "scope", "target", "provider", "model", "source"} for d in body["data"])
    assert len(idx.entries(include_inactive=True)) > len(rows)
    assert len(body["data"]) == len(rows)


@pytest.mark.parametrize("aliases_global, aliases_a", [
    ({"x": "y", "y": "x"}, {}),
    ({"x": "a:y"}, {"y": "x"}),  # a:y -> bare x: same scope (a) has none -> global x -> cycle
])
def test_cycles_raise(aliases_global, aliases_a):
    data = {"default_provider": "a", "providers": providers("a", aliases={"a": aliases_a}),
            "aliases": aliases_global}
    with pytest.raises(SpecErrors) as ei:
        AliasIndex.build(data, SourceMap())
    assert "cycle" in str(ei.value)


def test_deep_chain_raises():
    chain = {f"a{i}": f"a{i + 1}" for i in range(40)}
    chain["a40"] = "a:final"
    with pytest.raises(SpecErrors):
        AliasIndex.build({"default_provider": "a", "providers": providers("a"), "aliases": chain}, SourceMap())
    short = {f"a{i}": f"a{i + 1}" for i in range(5)}
    short["a5"] = "a:final"
    r = AliasIndex.build({"default_provider": "a", "providers": providers("a"), "aliases": short},
                         SourceMap()).resolve("a0")
    assert (r.provider, r.model, len(r.steps)) == ("a", "final", 6)


def test_lru_is_bounded_and_memoises():
    idx = AliasIndex.build(spec(), SOURCES, cache_size=8)
    for i in range(100):
        idx.resolve(f"claude-haiku-{i}")
        assert idx.cache_info().currsize <= 8
    assert idx.cache_info().currsize == 8
    a = idx.resolve("claude-haiku-99")
    assert idx.resolve("claude-haiku-99") is a
    assert idx.cache_info().hits >= 1
    idx0 = AliasIndex.build(spec(), SOURCES, cache_size=0)
    idx0.resolve("x")
    assert idx0.cache_info().currsize == 0


def test_normalize():
    assert normalize("Claude_3-5_Haiku") == "claude-3-5-haiku"


# ------------------------------------------------------------------ properties
def _shuffled(data: dict, rnd: random.Random) -> dict:
    d = copy.deepcopy(data)
    for p in d["providers"].values():
        items = list(p["aliases"].items())
        rnd.shuffle(items)
        p["aliases"] = dict(items)
    items = list(d.get("aliases", {}).items())
    rnd.shuffle(items)
    d["aliases"] = dict(items)
    return d


NAMES = st.text(alphabet="abcxyz-_", min_size=1, max_size=5)
MODELS = st.text(alphabet="abcxyzABC-_0:", min_size=0, max_size=14)


@st.composite
def alias_specs(draw):
    provs = ["p", "q", "r"]
    data = {"default_provider": draw(st.sampled_from(provs)), "providers": {}, "aliases": {}}
    for p in provs:
        names = draw(st.dictionaries(NAMES, st.text(alphabet="mn0123", min_size=1, max_size=4), max_size=5))
        data["providers"][p] = {"format": "openai", "base_url": "u", "aliases": {k: f"{p}-{v}" for k, v in names.items()}}
    g = draw(st.dictionaries(NAMES, st.sampled_from(provs), max_size=4))
    data["aliases"] = {k: f"{v}:g-{k}" for k, v in g.items()}
    return data


@settings(max_examples=150, deadline=None)
@given(alias_specs(), st.lists(MODELS, min_size=1, max_size=6), st.integers(0, 2**32 - 1),
       st.sets(st.sampled_from(["p", "q", "r"])))
def test_alias_order_within_scope_never_matters(data, models, seed, active):
    a = AliasIndex.build(data, SourceMap(), active=active)
    b = AliasIndex.build(_shuffled(data, random.Random(seed)), SourceMap(), active=active)
    for m in models:
        ra, rb = a.resolve(m), b.resolve(m)
        assert (ra.provider, ra.model, ra.steps) == (rb.provider, rb.model, rb.steps)
        assert ra.candidates == rb.candidates


@settings(max_examples=150, deadline=None)
@given(alias_specs(), MODELS)
def test_case_and_separator_insensitive(data, model):
    idx = AliasIndex.build(data, SourceMap())
    ra = idx.resolve(model)
    variant = model.upper().replace("-", "\0").replace("_", "-").replace("\0", "_")
    rb = idx.resolve(variant)
    if ra.kind in ("exact_alias", "substring_alias"):
        assert (ra.provider, ra.model) == (rb.provider, rb.model)
    else:
        assert rb.kind == ra.kind

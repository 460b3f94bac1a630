"""Routes on each request feature, first-match-wins, explain, and the resolve_target stage."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
from multidict import CIMultiDict

from vandamme.sources import SpecErrors
from vandamme.kernel import Context
from vandamme.sources import Source, SourceMap
from vandamme.transforms.aliases import AliasIndex
from vandamme.transforms.errors import GatewayError
from vandamme.transforms.resolve_stage import ResolveTarget
from vandamme.transforms.routing import RequestFeatures, Router
from vandamme.transforms.token_estimate import estimate_tokens


def spec(routes):
    return {
        "default_provider": "openai",
        "providers": {
            "openai": {"format": "openai", "base_url": "https://api.openai.com/v1",
                       "aliases": {"fast": "gpt-4o-mini", "haiku": "gpt-4o-mini", "sonnet": "gpt-4o"}},
            "anthropic": {"format": "anthropic", "base_url": "https://api.anthropic.com",
                          "aliases": {"haiku": "claude-3-5-haiku-latest"}},
            "gemini": {"format": "openai", "base_url": "https://gemini", "aliases": {}},
            "groq": {"format": "openai", "base_url": "https://groq", "aliases": {}},
        },
        "aliases": {"big": "anthropic:claude-opus-4-1"},
        "routes": routes,
    }


def router_for(routes, active=None):
    data = spec(routes)
    idx = AliasIndex.build(data, SourceMap(), active)
    return Router.build(data, SourceMap(), idx), idx


def body(model="claude-sonnet-4-5", thinking=False, tools=0, text="hi"):
    b = {"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": text}]}
    if thinking:
        b["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if tools:
        b["tools"] = [{"name": f"t{i}", "input_schema": {"type": "object"}} for i in range(tools)]
    return b


T = "gemini:gemini-2.5-pro"

# (match conditions, request body kwargs, headers, tokens, should match)
CASES = [
    ({"model": "*sonnet*"}, {}, {}, None, True),
    ({"model": "*SONNET*"}, {"model": "Claude_Sonnet_4"}, {}, None, True),
    ({"model": "*sonnet*"}, {"model": "claude-3-5-haiku"}, {}, None, False),
    ({"model": "claude-?-5-haiku*"}, {"model": "claude-3-5-haiku-2024"}, {}, None, True),
    ({"headers": {"x-team": "research*"}}, {}, {"X-Team": "research-ml"}, None, True),
    ({"headers": {"X-Team": "research*"}}, {}, {"x-team": "RESEARCH"}, None, True),
    ({"headers": {"x-team": "research*"}}, {}, {"x-team": "sales"}, None, False),
    ({"headers": {"x-team": "*"}}, {}, {}, None, False),  # missing header never matches
    ({"thinking": True}, {"thinking": True}, {}, None, True),
    ({"thinking": True}, {}, {}, None, False),
    ({"thinking": False}, {}, {}, None, True),
    ({"tools": True}, {"tools": 2}, {}, None, True),
    ({"tools": True}, {}, {}, None, False),
    ({"tools": False}, {}, {}, None, True),
    ({"min_tools": 3}, {"tools": 3}, {}, None, True),
    ({"min_tools": 3}, {"tools": 2}, {}, None, False),
    ({"max_tools": 3}, {"tools": 3}, {}, None, True),
    ({"max_tools": 3}, {"tools": 4}, {}, None, False),
    ({"min_tools": 1, "max_tools": 30}, {}, {}, None, False),
    ({"min_input_tokens": 1000}, {"text": "x" * 4000}, {}, None, True),
    ({"min_input_tokens": 1000}, {"text": "x" * 400}, {}, None, False),
    ({"min_input_tokens": 100000}, {}, {}, 150000, True),  # explicit token override
    ({"beta": "*context-1m*"}, {}, {"anthropic-beta": "context-1m-2025-08-07"}, None, True),
    ({"beta": "context-1m*"}, {}, {"anthropic-beta": "tools-2024, context-1m-2025-08-07"}, None, True),
    ({"beta": "*context-1m*"}, {}, {"anthropic-beta": "tools-2024-04-04"}, None, False),
    ({"beta": "*"}, {}, {}, None, False),
    ({"model": "*sonnet*", "thinking": True, "tools": True, "headers": {"x-team": "r*"}},
     {"thinking": True, "tools": 1}, {"x-team": "r1"}, None, True),
    ({"model": "*sonnet*", "thinking": True, "tools": True, "headers": {"x-team": "r*"}},
     {"thinking": True, "tools": 0}, {"x-team": "r1"}, None, False),
    ({}, {}, {}, None, True),  # no conditions: catch-all
]


@pytest.mark.parametrize("match, bkw, headers, tokens, expected", CASES)
def test_route_conditions(match, bkw, headers, tokens, expected):
    router, _ = router_for([{"name": "r", "match": match, "to": T}])
    f = RequestFeatures.from_body(body(**bkw), headers, tokens=tokens)
    m = router.match(f)
    assert (m is not None) is expected
    if m is not None:
        assert (m.provider, m.model, m.name) == ("gemini", "gemini-2.5-pro", "r")
    [rule] = router.explain(f)
    assert rule.matched is expected
    assert (rule.failed is None) is expected


def test_first_match_wins_and_fallbacks():
    router, _ = router_for([
        {"name": "thinkers", "match": {"thinking": True}, "to": "big"},
        {"name": "sonnets", "match": {"model": "*sonnet*"}, "to": "sonnet",
         "fallbacks": ["anthropic:haiku", "groq:llama-3"]},
        {"name": "all", "match": {}, "to": "fast"},
    ])
    m = router.match(RequestFeatures.from_body(body(thinking=True)))
    assert (m.name, m.provider, m.model) == ("thinkers", "anthropic", "claude-opus-4-1")
    m = router.match(RequestFeatures.from_body(body()))
    assert m.name == "sonnets"
    # `to` and fallbacks resolve through the alias index
    assert m.targets == (("openai", "gpt-4o"), ("anthropic", "claude-3-5-haiku-latest"), ("groq", "llama-3"))
    m = router.match(RequestFeatures.from_body(body(model="gpt-4o")))
    assert (m.name, m.model) == ("all", "gpt-4o-mini")


def test_explain_reports_first_failing_condition():
    router, _ = router_for([
        {"name": "long", "match": {"model": "*sonnet*", "thinking": True, "min_input_tokens": 10}, "to": T},
        {"match": {"tools": True}, "to": T},
    ])
    rules = router.explain(RequestFeatures.from_body(body(model="claude-haiku")))
    assert rules[0].failed.startswith("model: 'claude-haiku' does not match '*sonnet*'")
    assert rules[0].checks == (("model", False), ("thinking", False), ("min_input_tokens", False))
    assert rules[1].name == "routes[1]" and rules[1].failed.startswith("tools:")
    rules = router.explain(RequestFeatures.from_body(body(thinking=True), tokens=5))
    assert rules[0].failed == "min_input_tokens: 5 < 10"


def test_tokens_are_lazy():
    router, _ = router_for([{"match": {"model": "nomatch"}, "to": T}])
    assert not router.uses_tokens
    f = RequestFeatures.from_body(body(text="x" * 4000))
    router.match(f)
    assert f._tokens is None  # never estimated
    assert f.input_tokens == estimate_tokens(f._body)  # the one estimate count_tokens uses too
    router, _ = router_for([{"match": {"min_input_tokens": 1}, "to": T}])
    assert router.uses_tokens


def test_estimate_ignores_base64():
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "A" * 100000}}
    msgs = [{"role": "user", "content": [{"type": "text", "text": "x" * 400}, img]}]
    tokens = estimate_tokens({"system": "sys", "messages": msgs})
    assert 100 < tokens < 2000  # the image counts as an image, not as 100,000 characters of text


def test_features_from_body():
    f = RequestFeatures.from_body(body(thinking=True, tools=2),
                                  CIMultiDict({"Anthropic-Beta": "b1", "X-A": "1"}))
    assert (f.model, f.thinking, f.tools, f.tool_count, f.beta) == ("claude-sonnet-4-5", True, True, 2, "b1")
    assert f.header("x-a") == "1"
    f = RequestFeatures.from_body({"model": "m", "thinking": {"type": "disabled"}, "tools": []})
    assert (f.thinking, f.tools, f.tool_count, f.beta) == (False, False, 0, "")


def test_bad_routes_raise_with_source():
    src = SourceMap({("routes", 0): Source("specs/30-routes.yaml", 2, 3)})
    data = spec([{"match": {"colour": "red"}, "to": T}])
    with pytest.raises(SpecErrors) as ei:
        Router.build(data, src, AliasIndex.build(data, src))
    assert "specs/30-routes.yaml:2:3" in str(ei.value) and "colour" in str(ei.value)


# ------------------------------------------------------------------ the stage
@dataclass
class P:
    name: str
    format: str = "openai"
    base_url: str = ""
    active: bool = True
    inactive_reason: str | None = None


def stage_for(routes, active=("openai", "anthropic", "gemini")):
    data = spec(routes)
    idx = AliasIndex.build(data, SourceMap(), set(active))
    router = Router.build(data, SourceMap(), idx)
    provs = {n: P(n, active=n in active) for n in data["providers"]}
    return ResolveTarget(router, idx, provs), provs


def ctx_for(b, headers=None):
    import orjson
    import msgspec
    from vandamme.transforms.request_stages import RequestHead
    raw = orjson.dumps(b)
    c = Context(request_id="r1", raw_body=raw, headers=CIMultiDict(headers or {}))
    c.head = msgspec.json.decode(raw, type=RequestHead)  # what the `parse` stage sets
    return c


async def test_stage_alias_path():
    st, provs = stage_for([])
    assert st.name == "resolve_target"
    c = ctx_for(body(model="claude-3-5-haiku-20241022"))
    await st.run(c)
    assert c.requested_model == "claude-3-5-haiku-20241022"
    assert (c.provider, c.model) == (provs["openai"], "gpt-4o-mini")
    assert c.targets == [(provs["openai"], "gpt-4o-mini")]
    assert c.resolution[0].kind == "substring_alias"


async def test_stage_route_path_skips_inactive_fallbacks():
    st, provs = stage_for([{"name": "lc", "match": {"beta": "*context-1m*"}, "to": T,
                            "fallbacks": ["groq:llama", "sonnet"]}])
    c = ctx_for(body(), {"anthropic-beta": "context-1m-2025-08-07"})
    await st.run(c)
    assert c.targets == [(provs["gemini"], "gemini-2.5-pro"), (provs["openai"], "gpt-4o")]
    assert c.resolution[0].kind == "route" and c.route.name == "lc"
    c = ctx_for(body())
    await st.run(c)
    assert (c.provider.name, c.model) == ("openai", "gpt-4o")


@pytest.mark.parametrize("model, status, text", [
    ("groq:llama-3.3-70b", 400, "provider 'groq' is not configured: set GROQ_API_KEY"),
])
async def test_stage_errors(model, status, text):
    st, _ = stage_for([])
    with pytest.raises(GatewayError) as ei:
        await st.run(ctx_for(body(model=model)))
    assert ei.value.status == status and text in ei.value.message
    assert b'"type":"error"' in ei.value.body()


async def test_stage_uses_compiler_inactive_reason():
    st, provs = stage_for([])
    provs["groq"].inactive_reason = "no API key: set GROQ_API_KEY"
    with pytest.raises(GatewayError) as ei:
        await st.run(ctx_for(body(model="groq:llama")))
    assert ei.value.message.startswith("provider 'groq' is not configured: no API key: set GROQ_API_KEY")


async def test_stage_unknown_route_provider_is_404():
    data = spec([])
    idx = AliasIndex.build(data, SourceMap())
    st = ResolveTarget(Router.build(data, SourceMap(), idx), idx, {"openai": P("openai")})
    with pytest.raises(GatewayError) as ei:
        await st.run(ctx_for(body(model="anthropic:claude")))
    assert ei.value.status == 404 and "anthropic" in ei.value.message


async def test_front_rejects_empty_model_before_resolution():
    import orjson
    from vandamme.transforms.request_stages import Parse, Validate
    c = Context(request_id="r1", raw_body=orjson.dumps(body(model="")), headers=CIMultiDict())
    await Parse().run(c)
    with pytest.raises(GatewayError) as ei:
        await Validate().run(c)
    assert ei.value.status == 400 and "model" in ei.value.message

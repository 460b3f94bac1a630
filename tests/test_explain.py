"""`vandamme explain`: alias, route and default cases, text and JSON, answered by the runtime's
own resolve_target stage (ResolveTarget.resolve) over compiled providers."""
from __future__ import annotations

import orjson

from vandamme.engine.compiler import compile_gateway
from vandamme.engine.explain import (declared_resolver, explain, explain_json, live_resolver, request_features,
                            resolver_for)
from vandamme.engine.loader import LoadedSpec, load_spec
from vandamme.transforms.resolve_stage import ResolveTarget
from vandamme.sources import Source, SourceMap

DATA = {
    "default_provider": "openai",
    "providers": {
        "openai": {"format": "openai", "base_url": "https://api.openai.com/v1",
                   "aliases": {"haiku": "gpt-4o-mini", "sonnet": "gpt-4o"}},
        "anthropic": {"format": "anthropic", "base_url": "https://api.anthropic.com",
                      "aliases": {"haiku": "claude-3-5-haiku-latest"}},
        "gemini": {"format": "openai", "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"},
    },
    "aliases": {"big": "anthropic:claude-opus-4-1"},
    "routes": [
        {"name": "research", "match": {"headers": {"x-team": "research*"}}, "to": "big"},
        {"name": "long-context", "match": {"model": "*sonnet*", "min_input_tokens": 100000},
         "to": "gemini:gemini-2.5-pro", "fallbacks": ["openai:gpt-4o"]},
    ],
}
SOURCES = SourceMap({
    ("providers", "openai", "aliases", "haiku"): Source("specs/10-providers.yaml", 6, 7),
    ("providers", "anthropic", "aliases", "haiku"): Source("specs/10-providers.yaml", 12, 7),
    ("routes", 1): Source("specs/30-routes.yaml", 6, 5),
    ("default_provider",): Source("specs/00-base.yaml", 1, 1),
})
GATEWAY = compile_gateway(LoadedSpec(DATA, SOURCES))  # no keys: every provider inactive here


def resolver(active=None):
    """The resolve_target stage for DATA over its compiled providers; ``active=None``: as declared."""
    return ResolveTarget.build(DATA, SOURCES, GATEWAY.providers, active)


PIPES = {"front": ["parse", "validate", "resolve_target"],
         "openai": ["select_key", "render_headers", "anthropic_to_openai", "upstream", "openai_to_anthropic"],
         "anthropic": ["select_key", "render_headers", "upstream"]}


def test_alias_case():
    out = explain(resolver(), "claude-3-5-haiku-20241022", pipelines=PIPES)
    assert "substring_alias 'haiku'" in out
    assert "specs/10-providers.yaml:6:7" in out
    assert "other candidates:" in out and "anthropic:claude-3-5-haiku-latest" in out
    assert "provider: openai" in out and "model:    gpt-4o-mini" in out
    assert "base_url: https://api.openai.com/v1" in out and "format:   openai" in out
    assert "pipeline front: parse -> validate -> resolve_target" in out
    assert "pipeline openai: select_key" in out and "pipeline anthropic" not in out
    assert "[1] long-context (specs/30-routes.yaml:6:5): no: model:" in out


def test_route_case_with_tokens_and_header():
    out = explain(resolver(), "claude-sonnet-4-5", tokens=150000)
    assert "input_tokens=150000 (given)" in out
    assert "[1] long-context (specs/30-routes.yaml:6:5): MATCHED -> gemini:gemini-2.5-pro" in out
    assert "provider: gemini" in out and "targets (primary then fallbacks):" in out
    out = explain(resolver(), "claude-sonnet-4-5", headers={"X-Team": "research-ml"}, tokens=150000)
    assert "[0] research" in out and "MATCHED -> anthropic:claude-opus-4-1" in out
    assert "not tried (an earlier route matched)" in out
    assert "provider: anthropic" in out


def test_route_below_token_threshold_falls_to_alias():
    out = explain(resolver(), "claude-sonnet-4-5", tokens=10)
    assert "no: min_input_tokens: 10 < 100000" in out
    assert "substring_alias 'sonnet'" in out and "model:    gpt-4o" in out


def test_default_case():
    out = explain(resolver(), "gpt-4.1")
    assert "default: no alias matches 'gpt-4.1'" in out and "specs/00-base.yaml:1:1" in out
    assert "provider: openai" in out and "model:    gpt-4.1" in out


def test_inactive_provider_reported():
    out = explain(resolver({"anthropic"}), "claude-3-5-haiku-20241022")
    assert "skipped:" in out and "provider inactive" in out
    assert "provider: anthropic" in out
    # the runtime's error, with the compiler's reason
    j = explain_json(resolver({"openai"}), "gemini:gemini-2.5-pro")
    assert j["status"] == 400
    assert j["error"] == ("provider 'gemini' is not configured: no API key: set GEMINI_API_KEY "
                          "(model 'gemini:gemini-2.5-pro' resolves to it)")
    assert j["targets"][0]["error"] == "provider 'gemini' is not configured: no API key: set GEMINI_API_KEY"
    out = explain(resolver({"openai"}), "gemini:gemini-2.5-pro")
    assert "a request would fail with 400" in out


def test_json_shape():
    j = explain_json(resolver(), "claude-sonnet-4-5", tokens=200000, pipelines=PIPES)
    orjson.dumps(j)  # serialisable
    assert j["route"]["name"] == "long-context" and j["resolution"]["kind"] == "route"
    assert j["final"] == {"provider": "gemini", "model": "gemini-2.5-pro", "format": "openai",
                          "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"}
    assert [t["provider"] for t in j["targets"]] == ["gemini", "openai"]
    assert [r["matched"] for r in j["routes"]] == [False, True]
    assert set(j["pipelines"]) == {"front"}  # no "gemini" pipeline given
    j = explain_json(resolver(), "haiku")
    assert j["resolution"]["kind"] == "exact_alias" and j["final"]["model"] == "gpt-4o-mini"


# ------------------------------------------------------------------ explain on a compiled spec

SPEC = """\
version: 1
default_provider: openai
providers:
  openai:
    format: openai
    base_url: "{openai}"
    aliases: {{haiku: gpt-4o-mini, sonnet: gpt-4o}}
    middleware: [{{drop_params: {{fields: [top_k]}}}}]
  anthropic:
    format: anthropic
    base_url: "{anthropic}"
    aliases: {{haiku: claude-3-5-haiku-latest, sonnet: claude-sonnet-4-5}}
  gemini:
    format: openai
    base_url: "{gemini}"
middleware: [{{clamp: {{max_tokens: 4096}}}}]
routes:
  - name: research
    match: {{headers: {{x-team: "research*"}}}}
    to: "gemini:gemini-2.5-pro"
    fallbacks: ["anthropic:claude-opus-4-1", "openai:o3"]
    middleware: [{{redact: {{patterns: ["sk-[a-z0-9]+"]}}}}]
"""
URLS = {"openai": "http://127.0.0.1:9/v1", "anthropic": "http://127.0.0.1:9", "gemini": "http://127.0.0.1:9/g"}


def compiled(tmp_path, environ, urls=URLS):
    (tmp_path / "a.yaml").write_text(SPEC.format(**urls))
    return compile_gateway(load_spec(tmp_path, environ))


def test_live_is_the_gateways_own_stage_and_as_declared_counts_every_provider(tmp_path):
    gw = compiled(tmp_path, {"ANTHROPIC_API_KEY": "sk-ant-0123456789"})
    live = live_resolver(gw)
    assert live in gw.front.stages  # the very stage requests run through
    assert resolver_for(gw, live=True) is live
    declared = declared_resolver(gw)
    assert declared is not live and declared.providers is gw.providers  # same compiled providers

    # as declared: the default provider's alias wins; live: openai has no key, anthropic's wins
    assert explain_json(declared, "claude-3-5-haiku-20241022")["final"]["provider"] == "openai"
    j = explain_json(live, "claude-3-5-haiku-20241022")
    assert (j["final"]["provider"], j["final"]["model"]) == ("anthropic", "claude-3-5-haiku-latest")
    assert live.resolve("claude-3-5-haiku-20241022").target == "anthropic:claude-3-5-haiku-latest"
    # decisions are computed once (per model, per route): a request allocates none of its own
    assert live.resolve("claude-3-5-haiku-20241022") is live.resolve("claude-3-5-haiku-20241022")
    f = request_features("a", {"x-team": "research"})
    assert live.resolve("a", f) is live.resolve("b", request_features("b", {"x-team": "research-2"}))
    # live: the route's primary (gemini, no key) is dropped, the first usable fallback serves
    j = explain_json(live, "x", headers={"x-team": "research"})
    assert j["final"]["provider"] == "anthropic" and j["error"] is None
    assert [(t["provider"], t["active"]) for t in j["targets"]] == \
        [("gemini", False), ("anthropic", True), ("openai", False)]
    # live: a request only openai could serve fails as the stage would fail it
    j = explain_json(live, "openai:gpt-4o")
    assert j["status"] == 400 and j["error"] == live.resolve("openai:gpt-4o").error
    assert "set OPENAI_API_KEY" in j["error"]


def test_middleware_the_request_would_run(tmp_path):
    gw = compiled(tmp_path, {})
    declared = declared_resolver(gw)
    j = explain_json(declared, "claude-3-5-haiku-20241022", pipelines=gw.pipelines(),
                     pipeline_for=gw.pipeline_for)
    assert j["middleware"] == ["clamp", "drop_params"]  # global, then provider
    assert j["pipelines"]["openai"] == gw.pipeline_for("openai", None).stage_names
    j = explain_json(declared, "x", headers={"x-team": "research-1"}, pipelines=gw.pipelines(),
                     pipeline_for=gw.pipeline_for)
    assert j["final"]["provider"] == "gemini" and j["middleware"] == ["clamp", "redact"]  # global, route
    out = explain(declared, "x", headers={"x-team": "research-1"}, pipeline_for=gw.pipeline_for)
    assert "  middleware: clamp -> redact\n" in out


def test_explain_agrees_with_the_running_server(tmp_path):
    """The provider and model each fake upstream saw are what explain (--live) says."""
    import httpx

    from fakes.anthropic_upstream import FakeAnthropic
    from fakes.openai_upstream import FakeOpenAI
    from harness import LiveGateway

    fakes = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic(), "gemini": FakeOpenAI()}
    keys = {"OPENAI_API_KEY": "sk-0123456789", "ANTHROPIC_API_KEY": "sk-ant-0123456789"}  # no gemini key

    def spec(urls):
        return SPEC.format(**urls).replace("max_tokens: 4096", "max_tokens: 64")

    cases = [("claude-3-5-haiku-20241022", {}), ("claude-sonnet-4-5", {}), ("gpt-4.1", {}),
             ("anthropic:sonnet", {}), ("haiku", {"x-team": "research-ml"}),
             ("gemini:gemini-2.5-flash", {})]
    with LiveGateway(spec, fakes, tmp_path, environ=keys) as live:
        resolver = live_resolver(live.gateway)
        for model, headers in cases:
            j = explain_json(resolver, model, headers=headers)
            seen = {name: len(f.requests) for name, f in fakes.items()}
            r = httpx.post(live.base_url + "/v1/messages", headers={"x-api-key": "c", **headers}, timeout=10,
                           json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            hit = [name for name, f in fakes.items() if len(f.requests) > seen[name]]
            if j["error"] is not None:
                assert r.status_code == j["status"] and r.json()["error"]["message"] == j["error"], model
                assert hit == [], model
                continue
            assert r.status_code == 200, (model, r.text)
            assert hit == [j["final"]["provider"]], model
            assert fakes[hit[0]].requests[-1]["json"]["model"] == j["final"]["model"], model

"""`vandamme explain`: alias, route and default cases, text and JSON."""
from __future__ import annotations

import orjson

from engine.explain import explain, explain_json
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
PIPES = {"front": ["parse", "validate", "resolve_target"],
         "openai": ["select_key", "render_headers", "anthropic_to_openai", "upstream", "openai_to_anthropic"],
         "anthropic": ["select_key", "render_headers", "upstream"]}


def test_alias_case():
    out = explain(DATA, SOURCES, "claude-3-5-haiku-20241022", pipelines=PIPES)
    assert "substring_alias 'haiku'" in out
    assert "specs/10-providers.yaml:6:7" in out
    assert "other candidates:" in out and "anthropic:claude-3-5-haiku-latest" in out
    assert "provider: openai" in out and "model:    gpt-4o-mini" in out
    assert "base_url: https://api.openai.com/v1" in out and "format:   openai" in out
    assert "pipeline front: parse -> validate -> resolve_target" in out
    assert "pipeline openai: select_key" in out and "pipeline anthropic" not in out
    assert "[1] long-context (specs/30-routes.yaml:6:5): no: model:" in out


def test_route_case_with_tokens_and_header():
    out = explain(DATA, SOURCES, "claude-sonnet-4-5", tokens=150000)
    assert "input_tokens=150000 (given)" in out
    assert "[1] long-context (specs/30-routes.yaml:6:5): MATCHED -> gemini:gemini-2.5-pro" in out
    assert "provider: gemini" in out and "targets (primary then fallbacks):" in out
    out = explain(DATA, SOURCES, "claude-sonnet-4-5", headers={"X-Team": "research-ml"}, tokens=150000)
    assert "[0] research" in out and "MATCHED -> anthropic:claude-opus-4-1" in out
    assert "not tried (an earlier route matched)" in out
    assert "provider: anthropic" in out


def test_route_below_token_threshold_falls_to_alias():
    out = explain(DATA, SOURCES, "claude-sonnet-4-5", tokens=10)
    assert "no: min_input_tokens: 10 < 100000" in out
    assert "substring_alias 'sonnet'" in out and "model:    gpt-4o" in out


def test_default_case():
    out = explain(DATA, SOURCES, "gpt-4.1")
    assert "default: no alias matches 'gpt-4.1'" in out and "specs/00-base.yaml:1:1" in out
    assert "provider: openai" in out and "model:    gpt-4.1" in out


def test_inactive_provider_reported():
    out = explain(DATA, SOURCES, "claude-3-5-haiku-20241022", active={"anthropic"})
    assert "skipped:" in out and "provider inactive" in out
    assert "provider: anthropic" in out
    j = explain_json(DATA, SOURCES, "gemini:gemini-2.5-pro", active={"openai"})
    assert j["error"] == "provider 'gemini' is not configured: set GEMINI_API_KEY"
    out = explain(DATA, SOURCES, "gemini:gemini-2.5-pro", active={"openai"})
    assert "a request would fail with 400" in out


def test_json_shape():
    j = explain_json(DATA, SOURCES, "claude-sonnet-4-5", tokens=200000, pipelines=PIPES)
    orjson.dumps(j)  # serialisable
    assert j["route"]["name"] == "long-context" and j["resolution"]["kind"] == "route"
    assert j["final"] == {"provider": "gemini", "model": "gemini-2.5-pro", "format": "openai",
                          "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"}
    assert [t["provider"] for t in j["targets"]] == ["gemini", "openai"]
    assert [r["matched"] for r in j["routes"]] == [False, True]
    assert set(j["pipelines"]) == {"front"}  # no "gemini" pipeline given
    j = explain_json(DATA, SOURCES, "haiku")
    assert j["resolution"]["kind"] == "exact_alias" and j["final"]["model"] == "gpt-4o-mini"

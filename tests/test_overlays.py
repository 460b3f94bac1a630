"""vandamme.engine.overlays: env variables set spec values, coerced with cerberus, sourced env:VAR."""
from __future__ import annotations

import copy

import pytest

from vandamme.sources import SpecErrors
from vandamme.engine.loader import load_spec
from vandamme.engine.overlays import apply_env, header_name, parse_bool, split_keys
from vandamme.sources import Source, SourceMap

BASE = {
    "version": 1,
    "providers": {
        "openai": {"format": "openai", "base_url": "https://api.openai.com/v1"},
        "gemini": {"format": "openai", "base_url": "https://g/v1beta/openai"},
    },
}


def overlay(environ, data=None):
    data = copy.deepcopy(data if data is not None else BASE)
    sources = SourceMap({("providers", "openai"): Source("specs/a.yaml", 3, 3)})
    errors = apply_env(data, sources, environ)
    return data, sources, errors


def test_api_keys_split():
    data, sources, errors = overlay({"OPENAI_API_KEY": "k1 k2"})
    assert not errors
    assert data["providers"]["openai"]["api_keys"] == ["k1", "k2"]
    assert sources[("providers", "openai", "api_keys")] == Source(env="OPENAI_API_KEY")
    assert sources[("providers", "openai", "api_keys", 0)] == Source(env="OPENAI_API_KEY")
    assert sources[("providers", "openai", "api_keys", 1)] == Source(env="OPENAI_API_KEY")
    data, _, _ = overlay({"OPENAI_API_KEY": " a,b ,\n c  !PASSTHRU"})
    assert data["providers"]["openai"]["api_keys"] == ["a", "b", "c", "!PASSTHRU"]


def test_unknown_provider_key_ignored():
    data, sources, errors = overlay({"GITHUB_API_KEY": "x", "STRIPE_API_KEY": "y"})
    assert set(data["providers"]) == {"openai", "gemini"}
    assert not errors


def test_key_and_base_url_create_provider():
    data, sources, _ = overlay({"MYCO_API_KEY": "k", "MYCO_BASE_URL": "https://my.co/v1"})
    assert data["providers"]["myco"] == {"format": "openai", "api_keys": ["k"], "base_url": "https://my.co/v1"}
    assert str(sources[("providers", "myco")]) == "env:MYCO_BASE_URL"
    data, _, _ = overlay({"MYCO_API_KEY": "k", "MYCO_BASE_URL": "https://my.co",
                          "MYCO_API_FORMAT": "Anthropic"})
    assert data["providers"]["myco"]["format"] == "anthropic"


def test_keyless_custom_provider():
    data, sources, _ = overlay({"LOCAL_BASE_URL": "http://127.0.0.1:8000/v1", "LOCAL_API_FORMAT": "openai"})
    prov = data["providers"]["local"]
    assert prov == {"requires_key": False, "base_url": "http://127.0.0.1:8000/v1", "format": "openai"}
    # a base URL alone is not enough
    data, _, _ = overlay({"LOCAL_BASE_URL": "http://127.0.0.1:8000/v1"})
    assert "local" not in data["providers"]


def test_existing_provider_settings():
    data, sources, _ = overlay({"GEMINI_BASE_URL": "https://x/v1", "GEMINI_API_FORMAT": "anthropic",
                                "GEMINI_API_VERSION": "v9"})
    g = data["providers"]["gemini"]
    assert (g["base_url"], g["format"], g["api_version"]) == ("https://x/v1", "anthropic", "v9")
    assert str(sources[("providers", "gemini", "api_version")]) == "env:GEMINI_API_VERSION"


def test_provider_aliases():
    data, sources, _ = overlay({"OPENAI_ALIAS_FAST": "gpt-4o-mini", "NOPE_ALIAS_X": "y",
                                "VDM_ALIAS_HAIKU": "openai:gpt-4o-mini"})
    assert data["providers"]["openai"]["aliases"] == {"fast": "gpt-4o-mini"}
    assert "nope" not in data["providers"]
    assert data["aliases"] == {"haiku": "openai:gpt-4o-mini"}
    assert str(sources[("aliases", "haiku")]) == "env:VDM_ALIAS_HAIKU"
    assert str(sources[("providers", "openai", "aliases", "fast")]) == "env:OPENAI_ALIAS_FAST"


def test_vdm_and_custom_header_prefixes_are_not_providers():
    data, _, _ = overlay({"VDM_API_KEY": "x", "VDM_BASE_URL": "http://x", "CUSTOM_HEADER_API_KEY": "v",
                          "CUSTOM_HEADER_BASE_URL": "http://y"})
    assert set(data["providers"]) == {"openai", "gemini"}


def test_default_provider_and_headers():
    data, sources, _ = overlay({"VDM_DEFAULT_PROVIDER": "gemini", "CUSTOM_HEADER_X_TRACE_ID": "abc"})
    assert data["default_provider"] == "gemini"
    assert data["headers"] == {"X-Trace-Id": "abc"}
    assert str(sources[("headers", "X-Trace-Id")]) == "env:CUSTOM_HEADER_X_TRACE_ID"


def test_coercion():
    data, sources, errors = overlay({
        "HOST": "0.0.0.0", "PORT": "9000", "LOG_LEVEL": "debug", "REQUEST_TIMEOUT": "90",
        "CONNECT_TIMEOUT": "2.5", "MAX_RETRIES": "3", "MAX_TOKENS_LIMIT": "8192",
        "THOUGHT_SIGNATURE_CACHE_TTL": "60",
        "THOUGHT_SIGNATURE_MAX_CACHE_SIZE": "100", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318",
        "OTEL_SERVICE_NAME": "vdm"})
    assert not errors
    s = data["server"]
    assert s == {"host": "0.0.0.0", "port": 9000, "request_timeout": 90.0, "connect_timeout": 2.5,
                 "max_retries": 3, "max_tokens_limit": 8192}
    assert type(s["request_timeout"]) is float and type(s["port"]) is int
    assert data["logging"] == {"level": "DEBUG"}
    assert data["thought_signatures"] == {"cache_ttl": 60.0, "max_cache_size": 100}
    assert data["telemetry"] == {"otlp_endpoint": "http://c:4318", "service_name": "vdm"}
    assert str(sources[("server", "port")]) == "env:PORT"
    assert str(sources[("server",)]) == "env:HOST"


@pytest.mark.parametrize("raw,value", [("true", True), ("1", True), ("yes", True), ("ON", True),
                                       ("false", False), ("0", False), ("no", False), ("off", False)])
def test_bool_coercion(raw, value):
    """GEMINI_THOUGHT_SIGNATURES_ENABLED declares the middleware on Gemini providers (named
    gemini* or at Google's endpoint), or removes it; the declaration is sourced env:VAR."""
    base = copy.deepcopy(BASE)
    base["providers"]["g2"] = {"format": "openai",
                               "base_url": "https://generativelanguage.googleapis.com/v1beta/openai"}
    base["providers"]["gemini"]["middleware"] = [] if value else [{"gemini_thought_signatures": None}, "clamp"]
    data, sources, errors = overlay({"GEMINI_THOUGHT_SIGNATURES_ENABLED": raw}, base)
    assert not errors
    var = "env:GEMINI_THOUGHT_SIGNATURES_ENABLED"
    for name in ("gemini", "g2"):
        declared = data["providers"][name].get("middleware") or []
        assert ("gemini_thought_signatures" in declared) is value
        if value:
            at = declared.index("gemini_thought_signatures")
            assert str(sources.nearest(("providers", name, "middleware", at))) == var
    assert "middleware" not in data["providers"]["openai"]
    if not value:
        assert data["providers"]["gemini"]["middleware"] == ["clamp"]
        assert str(sources.nearest(("providers", "gemini", "middleware", 0))) == var


def test_coercion_errors():
    data, _, errors = overlay({"PORT": "abc", "REQUEST_TIMEOUT": "soon",
                               "GEMINI_THOUGHT_SIGNATURES_ENABLED": "maybe", "MAX_RETRIES": "1.5"})
    msgs = sorted(str(e) for e in errors)
    assert msgs == [
        "env:GEMINI_THOUGHT_SIGNATURES_ENABLED: must be a boolean "
        "(true/false/1/0/yes/no/on/off), got 'maybe'",
        "env:MAX_RETRIES: server.max_retries: must be an integer, got '1.5'",
        "env:PORT: server.port: must be an integer, got 'abc'",
        "env:REQUEST_TIMEOUT: server.request_timeout: must be a number, got 'soon'",
    ]
    assert "server" not in data  # nothing set from a bad value


def test_overlay_replaces_file_sources():
    data = copy.deepcopy(BASE)
    data["providers"]["openai"]["api_keys"] = ["a", "b", "c"]
    sources = SourceMap({("providers", "openai", "api_keys", i): Source("f", 1, 1) for i in range(3)})
    apply_env(data, sources, {"OPENAI_API_KEY": "z"})
    assert ("providers", "openai", "api_keys", 2) not in sources
    assert str(sources[("providers", "openai", "api_keys", 0)]) == "env:OPENAI_API_KEY"


def test_empty_values_are_unset():
    data, _, errors = overlay({"PORT": "", "OPENAI_API_KEY": "  "})
    assert not errors and "server" not in data and "api_keys" not in data["providers"]["openai"]


def test_helpers():
    assert split_keys("a b,c") == ["a", "b", "c"]
    assert header_name("X_API_TRACE") == "X-Api-Trace"
    assert parse_bool("Yes") is True
    with pytest.raises(ValueError):
        parse_bool("perhaps")


# ---- through load_spec
SPEC = """\
version: 1
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
server:
  port: 8082
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "00.yaml").write_text(SPEC)
    return tmp_path / "specs"


def test_load_spec_with_overlays(folder):
    loaded = load_spec(folder, {"PORT": "9999", "REQUEST_TIMEOUT": "90", "OPENAI_API_KEY": "k1 k2"})
    assert loaded.data["server"] == {"port": 9999, "request_timeout": 90.0}
    assert str(loaded.sources[("server", "port")]) == "env:PORT"
    assert str(loaded.sources[("server",)]) == "specs/00.yaml:6:1"


def test_load_spec_coercion_error(folder):
    with pytest.raises(SpecErrors) as info:
        load_spec(folder, {"PORT": "abc"})
    assert [str(e) for e in info.value.errors] == ["env:PORT: server.port: must be an integer, got 'abc'"]


def test_load_spec_overlay_fails_validation(folder):
    with pytest.raises(SpecErrors) as info:
        load_spec(folder, {"PORT": "0", "LOG_LEVEL": "loud", "OPENAI_API_FORMAT": "opanai"})
    assert sorted(str(e) for e in info.value.errors) == [
        "env:LOG_LEVEL: logging.level: 'LOUD' is not one of TRACE, DEBUG, INFO, WARNING, ERROR, CRITICAL",
        "env:OPENAI_API_FORMAT: providers.openai.format: 'opanai' is not one of openai, anthropic; "
        "did you mean 'openai'?",
        "env:PORT: server.port: must be >= 1, got 0",
    ]


def test_environ_none_uses_os_environ(folder, monkeypatch):
    monkeypatch.setenv("PORT", "7777")
    assert load_spec(folder).data["server"]["port"] == 7777

"""vandamme.engine.validation: schema and semantic errors, each with its exact file:line:col and path."""
from __future__ import annotations

import pytest

from vandamme.sources import SpecErrors
from vandamme.engine.loader import load_spec
from vandamme.sources import Source, SourceMap
from vandamme.engine.validation import normalize_alias, split_target, validate

HEAD = """\
version: 1
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
  anthropic:
    format: anthropic
    base_url: https://api.anthropic.com
"""
# HEAD occupies lines 1-8; whatever follows starts at line 9.


@pytest.fixture
def load(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "specs"
    folder.mkdir()

    def run(text: str, environ=None, name="10-x.yaml"):
        (folder / name).write_text(text, encoding="utf-8")
        return load_spec(folder, environ or {})

    def errors(text: str, environ=None, name="10-x.yaml"):
        with pytest.raises(SpecErrors) as info:
            run(text, environ, name)
        return info.value.errors

    run.errors = errors
    return run


def lines(errs):
    return [str(e) for e in errs]


def test_valid(load):
    loaded = load(HEAD + "default_provider: openai\n")
    assert loaded.data["default_provider"] == "openai"


def test_unknown_top_level_key_did_you_mean(load):
    errs = load.errors("version: 1\nprovders:\n  openai: {}\n")
    assert lines(errs) == ["specs/10-x.yaml:2:1: provders: unknown key 'provders'; did you mean 'providers'?"]
    assert errs[0].path == ("provders",)


def test_unknown_nested_key_each_reported(load):
    errs = load.errors(HEAD + "    base_ulr: x\n    zzzzzz: 1\n")
    assert lines(errs) == [
        "specs/10-x.yaml:9:5: providers.anthropic.base_ulr: unknown key 'base_ulr'; did you mean 'base_url'?",
        "specs/10-x.yaml:10:5: providers.anthropic.zzzzzz: unknown key 'zzzzzz'",
    ]


def test_wrong_type(load):
    errs = load.errors(HEAD + "server:\n  port: abc\n")
    assert lines(errs) == ["specs/10-x.yaml:10:3: server.port: expected integer, got string 'abc'"]


def test_out_of_range(load):
    errs = load.errors(HEAD + "server:\n  port: 70000\n  workers: 0\n")
    assert lines(errs) == [
        "specs/10-x.yaml:10:3: server.port: must be <= 65535, got 70000",
        "specs/10-x.yaml:11:3: server.workers: must be >= 1, got 0",
    ]


def test_bad_enum_format(load):
    errs = load.errors(HEAD + "  x:\n    format: opanai\n    base_url: http://x\n")
    assert lines(errs) == [
        "specs/10-x.yaml:10:5: providers.x.format: 'opanai' is not one of openai, anthropic; "
        "did you mean 'openai'?"]


def test_invalid_url(load):
    errs = load.errors(HEAD + "  x:\n    format: openai\n    base_url: htp:/x\n")
    assert lines(errs) == [
        "specs/10-x.yaml:11:5: providers.x.base_url: invalid URL 'htp:/x': expected http(s)://host[:port][/path]"]


def test_invalid_url_port_semantic(load):
    errs = load.errors(HEAD + "  x:\n    format: openai\n    base_url: http://host:99999/v1\n")
    assert lines(errs) == [
        "specs/10-x.yaml:11:5: providers.x.base_url: invalid URL 'http://host:99999/v1': "
        "expected http(s)://host[:port][/path]"]


def test_missing_required(load):
    errs = load.errors(HEAD + "  x:\n    base_url: http://x\n")
    assert lines(errs) == ["specs/10-x.yaml:9:3: providers.x: missing required key 'format'"]


def test_missing_version(load):
    errs = load.errors("providers: {}\n")
    assert lines(errs) == ["specs/10-x.yaml:1:1: missing required key 'version'"]


def test_version_const(load):
    errs = load.errors("version: 2\n")
    assert lines(errs) == ["specs/10-x.yaml:1:1: version: must be 1, got 2"]


def test_bad_provider_name(load):
    errs = load.errors(HEAD + "  Open-AI:\n    format: openai\n    base_url: http://x\n")
    assert len(errs) == 1
    assert str(errs[0]).startswith("specs/10-x.yaml:9:3: providers.Open-AI: invalid name 'Open-AI'")


def test_unknown_middleware(load):
    errs = load.errors(HEAD + "middleware:\n  - gemini_thought_signature\n")
    assert lines(errs) == [
        "specs/10-x.yaml:10:5: middleware[0]: unknown middleware 'gemini_thought_signature'; did you "
        "mean 'gemini_thought_signatures'? (known: clamp, drop_params, gemini_thought_signatures, "
        "inject_system, redact, set_params; or use: 'package.module:Class')"]


def test_many_errors_all_reported_sorted(load):
    errs = load.errors(HEAD + "server: {port: x, host: 1}\nlogging: {level: debug}\nfoo: 1\n")
    assert [e.source.line for e in errs] == [9, 9, 10, 11]
    assert {e.path for e in errs} == {("server", "port"), ("server", "host"), ("logging", "level"), ("foo",)}


def test_default_provider_unknown(load):
    errs = load.errors(HEAD + "default_provider: opneai\n")
    assert len(errs) == 1
    e = errs[0]
    assert str(e.source) == "specs/10-x.yaml:9:1" and e.path == ("default_provider",)
    assert "unknown provider 'opneai'" in e.message and "did you mean 'openai'" in e.message
    assert "known providers: anthropic, openai" in e.message


def test_alias_target_unknown_provider(load):
    errs = load.errors(HEAD + "aliases:\n  fast: opnai:gpt-4o-mini\n")
    assert len(errs) == 1
    e = errs[0]
    assert str(e.source) == "specs/10-x.yaml:10:3" and e.path == ("aliases", "fast")
    assert "unknown provider 'opnai'" in e.message and "did you mean 'openai'" in e.message


def test_provider_alias_with_colon_is_model(load):
    # a provider-scoped target keeps colons of model tags (ollama style)
    load(HEAD + "    aliases: {small: 'llama3:8b'}\n")


def test_route_unknown_provider(load):
    errs = load.errors(HEAD + "routes:\n  - match: {model: '*sonnet*'}\n    to: gogle:gemini\n"
                              "    fallbacks: [anthropic:claude, nope:x]\n")
    assert lines(errs)[0].startswith("specs/10-x.yaml:11:5: routes[0].to: route target 'gogle:gemini' "
                                     "names unknown provider 'gogle'")
    assert lines(errs)[1].startswith("specs/10-x.yaml:12:35: routes[0].fallbacks[1]: fallback 'nope:x' "
                                     "names unknown provider 'nope'")
    assert len(errs) == 2


def test_route_requires_to_and_unknown_match_key(load):
    errs = load.errors(HEAD + "routes:\n  - match: {modle: x}\n")
    assert lines(errs) == [
        "specs/10-x.yaml:10:5: routes[0]: missing required key 'to'",
        "specs/10-x.yaml:10:13: routes[0].match.modle: unknown key 'modle'; did you mean 'model'?",
    ]


def test_alias_cycle_global(load):
    errs = load.errors(HEAD + "aliases:\n  a: b\n  b: openai:c\n  c: a\n")
    assert len(errs) == 1
    e = errs[0]
    assert e.message.startswith("alias cycle: a -> b -> c -> a")
    assert str(e.source) == "specs/10-x.yaml:10:3" and e.path == ("aliases", "a")
    assert [str(r) for r in e.related] == ["specs/10-x.yaml:11:3", "specs/10-x.yaml:12:3"]
    assert "specs/10-x.yaml:11" in e.message and "specs/10-x.yaml:12" in e.message


def test_alias_cycle_across_scopes(load):
    errs = load.errors(HEAD.replace("    base_url: https://api.openai.com/v1\n",
                                    "    base_url: https://api.openai.com/v1\n    aliases: {x: y, y: x}\n"))
    assert len(errs) == 1
    assert errs[0].message.startswith("alias cycle: openai:x -> openai:y -> openai:x")
    assert errs[0].path == ("providers", "openai", "aliases", "x")


def test_alias_self_reference_is_cycle(load):
    errs = load.errors(HEAD + "aliases:\n  fast: fast\n")
    assert errs[0].message.startswith("alias cycle: fast -> fast")


def test_alias_chain_without_cycle_ok(load):
    load(HEAD + "aliases:\n  a: b\n  b: openai:sonnet\n"
         "  c: anthropic:fast\n")


def test_alias_duplicate_normalised(load):
    errs = load.errors(HEAD + "aliases:\n  Fast-One: openai:a\n  fast_one: openai:b\n")
    assert len(errs) == 1
    e = errs[0]
    assert str(e.source) == "specs/10-x.yaml:11:3" and e.path == ("aliases", "fast_one")
    assert "Fast-One" in e.message and "specs/10-x.yaml:10" in e.message


def test_header_injection(load):
    errs = load.errors(HEAD + 'headers:\n  X-Trace: "a\\r\\nEvil: 1"\n')
    assert lines(errs) == ["specs/10-x.yaml:10:3: headers.X-Trace: header value contains CR or LF "
                           "(header injection)"]


def test_header_bad_template(load):
    errs = load.errors(HEAD + 'headers:\n  X-Trace: "{{ request.id "\n')
    assert len(errs) == 1 and "jinja2" in errs[0].message and errs[0].source.line == 10


def test_otlp_endpoint_null_or_url(load):
    load(HEAD + "telemetry: {otlp_endpoint: null, service_name: v}\n")
    errs = load.errors(HEAD + "telemetry: {otlp_endpoint: 'ftp://x'}\n")
    assert "invalid URL 'ftp://x'" in errs[0].message


def test_full_featured_spec_is_valid(load):
    load(HEAD + """\
server: {host: 0.0.0.0, port: 8082, workers: 2, request_timeout: 90, connect_timeout: 5,
         max_retries: 2, retry_backoff: 0.5, max_tokens_limit: 4096, ping_interval: 10,
         models_cache_ttl: 0}
logging: {level: DEBUG, json: true, access_log: false}
default_provider: anthropic
aliases: {fast: openai:gpt-4o-mini}
headers: {X-Gateway: vandamme}
middleware: [{inject_system: {text: policy}}, {clamp: {max_tokens: 100}}]
thought_signatures: {cache_ttl: 60, max_cache_size: 10}
telemetry: {service_name: vdm, otlp_endpoint: 'http://127.0.0.1:4318'}
routes:
  - name: big
    match: {model: '*sonnet*', headers: {x-team: 'a*'}, thinking: true, tools: true,
            min_tools: 1, max_tools: 5, min_input_tokens: 1000, beta: '*context*'}
    to: openai:gpt-4o
    fallbacks: [anthropic:claude-sonnet-4-5, fast]
""")


def test_secret_api_key_never_in_messages(load):
    secret = "sk-SUPERSECRET-1234567890"
    text = HEAD + f"    api_keys: [{{nested: '{secret}'}}]\n"
    errs = load.errors(text)
    assert errs and all(secret not in str(e) for e in errs)
    errs = load.errors(HEAD + f"    api_keys: '{secret}'\n")
    assert errs and all(secret not in str(e) for e in errs)
    errs = load.errors(HEAD + f"    headers: {{Authorization: \"Bearer {secret}\\nX: y\"}}\n")
    assert errs and all(secret not in str(e) for e in errs)


def test_secret_env_key_never_in_messages(load):
    secret = "sk-ENVSECRET-abcdefghijkl"
    environ = {"OPENAI_API_KEY": secret, "PORT": "nope", "ANTHROPIC_API_KEY": f"{secret},x",
               "FOO_API_KEY": secret, "BAR_API_KEY": secret, "BAR_BASE_URL": "not a url"}
    errs = load.errors(HEAD, environ)
    text = "\n".join(str(e) for e in errs) + "\n".join(str(e.as_dict()) for e in errs)
    assert secret not in text
    assert any(str(e).startswith("env:PORT: server.port:") for e in errs)
    assert any(str(e).startswith("env:BAR_BASE_URL: providers.bar.base_url: invalid URL") for e in errs)


def test_validate_direct_call():
    data = {"version": 1, "providers": {"p": {"format": "openai", "base_url": "http://x"}}, "bogus": 1}
    errs = validate(data, SourceMap({("bogus",): Source("f.yaml", 3, 1)}))
    assert [str(e) for e in errs] == ["f.yaml:3:1: bogus: unknown key 'bogus'"]


def test_helpers():
    assert normalize_alias("Fast-One") == normalize_alias("fast_one")
    assert split_target("openai:gpt-4o") == ("openai", "gpt-4o")
    assert split_target("gpt-4o") == (None, "gpt-4o")
    assert split_target("llama3:8b", ["ollama"]) == (None, "llama3:8b")

"""Declared middleware end to end: the official anthropic SDK → the real server → fake upstreams
(OpenAI and Anthropic wire formats) on 127.0.0.1; and `vandamme validate`/`graph` as subprocesses."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import anthropic
import httpx
import pytest

from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from fakes.openai_upstream import DEFAULT_TEXT, FakeOpenAI, Reply
from harness import LiveGateway, run_cli

TESTS = Path(__file__).resolve().parent
USER = [{"role": "user", "content": "hi"}]


def client(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0, timeout=15)


def cli(*args):
    return run_cli(*args, pythonpath=[TESTS])  # stage_samples is importable by `use:`


def two_providers(middleware: str = "", openai_extra: str = "", anthropic_extra: str = "",
                  routes: str = "") -> callable:
    def spec(u):
        return f"""
version: 1
server: {{max_retries: 0}}
default_provider: oa
providers:
  oa:
    format: openai
    base_url: "{u['oa']}"
    api_keys: [sk-oa-0123456789]
{textwrap.indent(openai_extra, '    ')}
  an:
    format: anthropic
    base_url: "{u['an']}"
    api_keys: [sk-an-0123456789]
{textwrap.indent(anthropic_extra, '    ')}
{middleware}
{routes}
"""
    return spec


# --------------------------------------------------------------------------- declared order
ORDER_A = """middleware:
  - set_params: {values: {system: BASE}}
  - inject_system: {text: POLICY}
"""
ORDER_B = """middleware:
  - inject_system: {text: POLICY}
  - set_params: {values: {system: BASE}}
"""


@pytest.mark.parametrize("declared,system,order", [
    (ORDER_A, "POLICY\n\nBASE", ["set_params", "inject_system"]),
    (ORDER_B, "BASE", ["inject_system", "set_params"]),
])
def test_declared_order_is_the_run_order(tmp_path, declared, system, order):
    oa, an = FakeOpenAI(), FakeAnthropic()
    spec = two_providers(declared)
    with LiveGateway(spec, {"oa": oa, "an": an}, tmp_path) as gw:
        c = client(gw)
        c.messages.create(model="gpt-4o", max_tokens=20, system="client", messages=USER)
        assert oa.requests[-1]["json"]["messages"][0] == {"role": "system", "content": system}
        c.messages.create(model="an:claude-x", max_tokens=20, system="client", messages=USER)
        assert an.requests[-1]["json"]["system"] == system
        (tmp_path / "specs" / "gateway.yaml").write_text(spec({"oa": "http://127.0.0.1:9/v1",
                                                               "an": "http://127.0.0.1:9"}))
    r = cli("graph", str(tmp_path / "specs"), "--format", "json")
    assert r.returncode == 0, r.stderr
    graph = json.loads(r.stdout)
    for name in ("oa", "an"):
        pipe = graph["providers"][name]["pipelines"]["messages"]
        assert pipe["middleware"] == order
        declared_stages = [s for s in pipe["stages"] if s["name"] in order]
        assert [s["name"] for s in declared_stages] == order
        assert all(s["source"].startswith(str(tmp_path / "specs" / "gateway.yaml") + ":")
                   or s["source"].startswith("specs/") or ".yaml:" in s["source"] for s in declared_stages)
        assert [s["name"] for s in pipe["stages"]].count("decode_body") == 1
    builtins = [s for s in graph["providers"]["oa"]["pipelines"]["messages"]["stages"]
                if s["name"] == "anthropic_to_openai"]
    assert builtins[0]["source"] == "built in"


def test_response_hooks_run_in_reverse_and_see_stream_events(tmp_path):
    declared = """middleware:
  - use: "stage_samples:Mark"
    with: {mark: A}
  - use: "stage_samples:Mark"
    with: {mark: B}
"""
    oa, an = FakeOpenAI(), FakeAnthropic()
    with LiveGateway(two_providers(declared), {"oa": oa, "an": an}, tmp_path) as gw:
        c = client(gw)
        msg = c.messages.create(model="gpt-4o", max_tokens=20, messages=USER)
        assert oa.requests[-1]["json"]["messages"][0]["content"] == "[A][B]"
        assert msg.content[0].text.endswith("<B><A>")  # B saw the answer first
        msg = c.messages.create(model="an:claude-x", max_tokens=20, messages=USER)
        assert an.requests[-1]["json"]["system"] == "[A][B]"
        assert msg.content[0].text == "Hello from the fake Anthropic upstream.<B><A>"
        with httpx.stream("POST", gw.base_url + "/v1/messages", timeout=15, json={
                "model": "an:claude-x", "max_tokens": 20, "stream": True, "messages": USER}) as r:
            body = r.read().decode()
        assert "event: ping" not in body  # dropped by on_event returning False
        delta = [json.loads(line[6:]) for line in body.splitlines()
                 if line.startswith("data: ") and '"message_delta"' in line]
        assert delta[0]["usage"]["output_tokens"] == 1001  # both saw the one content_block_stop
        with c.messages.stream(model="gpt-4o", max_tokens=20, messages=USER) as s:
            text = "".join(s.text_stream)
        assert text == DEFAULT_TEXT  # Mark has no text-delta rule: deltas pass unchanged
        assert s.get_final_message().usage.output_tokens == 1001


def test_passthrough_without_middleware_is_not_decoded(tmp_path):
    oa, an = FakeOpenAI(), FakeAnthropic()
    with LiveGateway(two_providers(), {"oa": oa, "an": an}, tmp_path) as gw:
        names = gw.gateway.providers["an"].pipeline.stage_names
        assert "decode_body" not in names
        raw = b'{"model":"an:claude-x","max_tokens":5,"service_tier":"auto","messages":[{"role":"user","content":"hi"}]}'
        httpx.post(gw.base_url + "/v1/messages", content=raw, timeout=15,
                   headers={"content-type": "application/json"})
        assert an.requests[-1]["body"] == raw.replace(b'"an:claude-x"', b'"claude-x"')


def test_passthrough_middleware_keeps_every_other_field(tmp_path):
    declared = """middleware:
  - drop_params: {fields: [top_k, temperature]}
  - inject_system: {text: POLICY, position: append}
"""
    oa, an = FakeOpenAI(), FakeAnthropic()
    with LiveGateway(two_providers(declared), {"oa": oa, "an": an}, tmp_path) as gw:
        httpx.post(gw.base_url + "/v1/messages", timeout=15, json={
            "model": "an:claude-x", "max_tokens": 5, "service_tier": "auto", "top_k": 3, "temperature": 0.5,
            "system": [{"type": "text", "text": "client", "cache_control": {"type": "ephemeral"}}],
            "messages": USER})
        sent = an.requests[-1]["json"]
        assert "top_k" not in sent and "temperature" not in sent
        assert sent["service_tier"] == "auto" and sent["model"] == "claude-x"
        assert sent["system"] == [{"type": "text", "text": "client", "cache_control": {"type": "ephemeral"}},
                                  {"type": "text", "text": "POLICY"}]


def test_route_and_provider_middleware_apply_only_there(tmp_path):
    routes = """routes:
  - name: opus
    match: {model: "*opus*"}
    to: oa:o3
    middleware: [{clamp: {max_tokens: 50, temperature: {max: 0.5}}}]
"""
    oa, an = FakeOpenAI(), FakeAnthropic()
    spec = two_providers(routes=routes, openai_extra="middleware: [{set_params: {values: {metadata: {user_id: oa-user}}}}]",
                         anthropic_extra="middleware: [{redact: {patterns: ['sk-[a-z0-9]+']}}]")
    with LiveGateway(spec, {"oa": oa, "an": an}, tmp_path) as gw:
        c = client(gw)

        def post(**body):
            r = httpx.post(gw.base_url + "/v1/messages", json=body, timeout=15)
            assert r.status_code == 200, r.text

        post(model="claude-opus-4-1", max_tokens=1000, temperature=0.9, messages=USER)
        sent = oa.requests[-1]["json"]
        assert sent["model"] == "o3" and sent.get("max_completion_tokens", sent.get("max_tokens")) == 50
        assert sent["temperature"] == 0.5
        assert sent.get("user") == "oa-user"  # the provider's own middleware ran after the route's
        post(model="gpt-4o", max_tokens=1000, temperature=0.9, messages=USER)
        sent = oa.requests[-1]["json"]
        assert sent.get("max_completion_tokens", sent.get("max_tokens")) == 1000 and sent["temperature"] == 0.9
        c.messages.create(model="an:claude-x", max_tokens=10, system="key sk-abc123 here",
                          messages=[{"role": "user", "content": "mine is sk-zz9"}])
        sent = an.requests[-1]["json"]
        assert sent["system"] == "key [REDACTED] here"
        assert sent["messages"][0]["content"] == "mine is [REDACTED]"
        assert "metadata" not in sent  # oa's set_params is not an's


def test_openai_side_user_stage(tmp_path):
    oa, an = FakeOpenAI(), FakeAnthropic()
    spec = two_providers(openai_extra='middleware: [{use: "stage_samples:OpenAISeed", with: {seed: 42}}]')
    with LiveGateway(spec, {"oa": oa, "an": an}, tmp_path) as gw:
        client(gw).messages.create(model="gpt-4o", max_tokens=10, messages=USER)
        assert oa.requests[-1]["json"]["seed"] == 42
        names = gw.gateway.providers["oa"].pipeline.stage_names
        assert names.index("openai_seed") < names.index("encode_upstream") < names.index("upstream")


@pytest.mark.parametrize("first,second", [("oa", "an"), ("an", "oa")])
def test_fallback_attempt_starts_from_the_client_request(tmp_path, first, second):
    routes = f"""routes:
  - match: {{model: "*"}}
    to: {first}:m1
    fallbacks: [{second}:m2]
"""
    declared = "middleware: [{inject_system: {text: POLICY}}]\n"
    oa, an = FakeOpenAI(), FakeAnthropic()
    (oa if first == "oa" else an).enqueue(
        Reply(status=503, error_message="down") if first == "oa" else AnthropicReply(status=503))
    with LiveGateway(two_providers(declared, routes=routes), {"oa": oa, "an": an}, tmp_path) as gw:
        httpx.post(gw.base_url + "/v1/messages", timeout=15, json={
            "model": "x", "max_tokens": 5, "service_tier": "auto", "system": "client", "messages": USER})
    assert len(oa.requests) == 1 and len(an.requests) == 1
    sent_an = an.requests[0]["json"]
    assert sent_an["service_tier"] == "auto"  # a converted attempt before it did not drop it
    assert sent_an["system"] == "POLICY\n\nclient"  # injected once, not once per attempt
    assert oa.requests[0]["json"]["messages"][0]["content"] == "POLICY\n\nclient"


def test_count_tokens_counts_the_request_as_sent_by_the_client(tmp_path):
    oa, an = FakeOpenAI(), FakeAnthropic()
    with LiveGateway(two_providers("middleware: [{inject_system: {text: POLICY}}]"),
                     {"oa": oa, "an": an}, tmp_path) as gw:
        r = httpx.post(gw.base_url + "/v1/messages/count_tokens", timeout=15,
                       json={"model": "an:claude-x", "messages": USER})
        assert r.status_code == 200
        assert "system" not in an.requests[-1]["json"]


# --------------------------------------------------------------------------- validation
BASE_SPEC = """version: 1
providers:
  oa: {format: openai, base_url: "http://127.0.0.1:9/v1"}
  an: {format: anthropic, base_url: "http://127.0.0.1:9"}
"""


@pytest.mark.parametrize("text,where,needle", [
    ("middleware: [inject_sytem]\n", "a.yaml:5:14: middleware[0]:", "unknown middleware 'inject_sytem'; did you mean 'inject_system'?"),
    ("middleware:\n  - gemini_thought_signatures\n", "a.yaml:6:5: middleware[0]:", "can only be declared under an OpenAI-format provider"),
    ("@an", "a.yaml:4:40: providers.an.middleware[0]:", "provider 'an' has format anthropic"),
    ("middleware: [{clamp: {max_tokens: lots}}]\n", "a.yaml:5:23: middleware[0].clamp.max_tokens:", "expected integer"),
    ("middleware: [{clamp: {max_token: 5}}]\n", "a.yaml:5:23: middleware[0].clamp.max_token:", "unknown key 'max_token'; did you mean 'max_tokens'?"),
    ("middleware: [{inject_system: {}}]\n", "a.yaml:5:15: middleware[0].inject_system:", "missing required key 'text'"),
    ("middleware: [{drop_params: {fields: [model]}}]\n", "a.yaml:5:", "middleware[0].drop_params.fields[0]"),
    ("routes:\n  - to: oa:x\n    middleware: [{use: 'no_such_module:X'}]\n", "a.yaml:7:19: routes[0].middleware[0].use:",
     "cannot import 'no_such_module'"),
    ("middleware: [{use: 'stage_samples:NotAStage'}]\n", "a.yaml:5:15: middleware[0].use:", "not a vandamme.kernel.Middleware subclass"),
    ("middleware: [{use: 'stage_samples:Mark', with: {mark: 3}}]\n", "a.yaml:5:", "middleware[0].with.mark: expected string"),
    ("middleware: [{use: 'stage_samples:OpenAISeed'}]\n", "a.yaml:5:14: middleware[0]:", "OpenAI wire format"),
    ("middleware: [upstream]\n", "a.yaml:5:14: middleware[0]:", "built-in pipeline stage, not middleware"),
])
def test_validate_reports_bad_middleware_with_position(tmp_path, text, where, needle):
    if text == "@an":  # the Anthropic-format provider declares an OpenAI-side stage
        spec = BASE_SPEC.replace("an: {format: anthropic,", "an: {format: anthropic, middleware: [gemini_thought_signatures],")
    else:
        spec = BASE_SPEC + text
    (tmp_path / "a.yaml").write_text(spec)
    r = cli("validate", str(tmp_path))
    assert r.returncode == 1, r.stdout
    assert "Traceback" not in r.stderr
    line = next((ln for ln in r.stderr.splitlines() if needle in ln), None)
    assert line is not None, r.stderr
    assert where in line, line


def test_validate_accepts_user_stage_and_json_errors(tmp_path):
    (tmp_path / "a.yaml").write_text(BASE_SPEC + "middleware: [{use: 'stage_samples:Mark', with: {mark: Q}}]\n")
    r = cli("validate", str(tmp_path))
    assert r.returncode == 0, r.stderr
    (tmp_path / "a.yaml").write_text(BASE_SPEC + "middleware: [nope]\n")
    r = cli("validate", str(tmp_path), "--format", "json")
    assert r.returncode == 1
    err = json.loads(r.stdout)["errors"][0]
    assert (err["line"], err["col"], err["path"]) == (5, 14, "middleware[0]")

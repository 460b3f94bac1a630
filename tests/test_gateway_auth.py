"""Gateway keys (server.auth.keys / VDM_API_KEYS): off by default; when on, every request presents
one or gets a 401; its name labels logs and spans; a !PASSTHRU provider takes the client's own
provider key while the gateway key travels in x-vandamme-key and never goes upstream."""
from __future__ import annotations

import anthropic
import httpx
import pytest
from aiohttp import web
from loguru import logger
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vandamme.engine.config_show import render_config
from vandamme.engine.loader import load_spec
from fakes.anthropic_upstream import FakeAnthropic
from fakes.loopback import LoopbackServer
from fakes.openai_upstream import FakeOpenAI
from harness import LiveGateway

TEAM = "gw-team-key-0123456789abcdef"
CI = "gw-ci-key-fedcba9876543210"
PROVIDER_KEY = "sk-ant-client-own-key-000111"
MSG = {"max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def spec(auth: bool):
    block = f"""  auth:
    keys:
      - {{name: team, key: {TEAM}}}
      - {{name: ci, key: {CI}}}
""" if auth else ""

    def text(u):
        return f"""
version: 1
server:
  max_retries: 0
{block}
logging: {{access_log: true}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [sk-oa-0123456789]}}
  an: {{format: anthropic, base_url: "{u['an']}", api_keys: ["!PASSTHRU"]}}
"""
    return text


def post(gw, model, **headers):
    return httpx.post(gw.base_url + "/v1/messages", json={"model": model, **MSG}, headers=headers, timeout=15)


def test_off_by_default(tmp_path):
    with LiveGateway(spec(False), {"oa": FakeOpenAI(), "an": FakeAnthropic()}, tmp_path) as gw:
        assert "authenticate" not in gw.gateway.front.stage_names
        assert post(gw, "gpt-4o").status_code == 200


@pytest.fixture
def live(tmp_path):
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    lines: list[str] = []
    sink = logger.add(lambda m: lines.append(str(m)), level="TRACE")
    fakes = {"oa": FakeOpenAI(), "an": FakeAnthropic()}
    try:
        with LiveGateway(spec(True), fakes, tmp_path, tracer_provider=tp) as gw:
            gw.fakes, gw.spans, gw.lines = fakes, exporter, lines
            yield gw
    finally:
        logger.remove(sink)


@pytest.mark.parametrize("headers,status", [
    ({}, 401),
    ({"x-api-key": "wrong-key-0123456789abcd"}, 401),
    ({"x-api-key": TEAM[:-1]}, 401),
    ({"x-api-key": TEAM}, 200),
    ({"authorization": f"Bearer {CI}"}, 200),
    ({"x-vandamme-key": TEAM}, 200),
    ({"x-vandamme-key": "nope", "x-api-key": TEAM}, 401),  # the gateway header decides
])
def test_keys_checked(live, headers, status):
    r = post(live, "gpt-4o", **headers)
    assert r.status_code == status, r.text
    if status == 401:
        assert r.json()["error"]["type"] == "authentication_error"


def test_sdk_client_with_gateway_key_and_name_in_logs_and_spans(live):
    c = anthropic.Anthropic(base_url=live.base_url, api_key=TEAM, max_retries=0, timeout=15)
    c.messages.create(model="gpt-4o", **MSG)
    assert any("(client team)" in line for line in live.lines)
    assert {s.attributes.get("vandamme.client") for s in live.spans.get_finished_spans()
            if "vandamme.stage" in s.attributes and s.name != "authenticate"} == {"team"}
    for text in live.lines + [s.to_json() for s in live.spans.get_finished_spans()]:
        assert TEAM not in text and CI not in text


def test_passthrough_provider_key_and_gateway_key_never_mix(live):
    r = post(live, "an:claude-x", **{"x-vandamme-key": CI, "x-api-key": PROVIDER_KEY})
    assert r.status_code == 200, r.text
    sent = live.fakes["an"].requests[-1]["headers"]
    assert sent["x-api-key"] == PROVIDER_KEY
    assert CI not in str(sent)
    r = post(live, "an:claude-x", **{"x-api-key": CI})  # the gateway key as the client key
    assert r.status_code == 401 and "x-vandamme-key" in r.json()["error"]["message"]
    assert len(live.fakes["an"].requests) == 1  # nothing sent


def test_env_keys_and_config_show_masks_them(tmp_path, monkeypatch):
    (tmp_path / "a.yaml").write_text("version: 1\n")
    loaded = load_spec(tmp_path, {"VDM_API_KEYS": f"ops:{TEAM} {CI}"})
    assert loaded.data["server"]["auth"]["keys"] == [{"name": "ops", "key": TEAM}, {"name": "key2", "key": CI}]
    shown = render_config(loaded)
    assert TEAM not in shown and CI not in shown and "name: ops" in shown
    with pytest.raises(Exception) as err:
        load_spec(tmp_path, {"VDM_API_KEYS": "short"})
    assert "short" not in str(err.value) and "server.auth.keys[0].key" in str(err.value)


def test_models_and_aliases_need_the_key_health_does_not(live):
    for path in ("/v1/models", "/v1/aliases"):
        assert httpx.get(live.base_url + path, timeout=15).status_code == 401
        assert httpx.get(live.base_url + path, headers={"x-api-key": CI}, timeout=15).status_code == 200
    assert httpx.get(live.base_url + "/health", timeout=15).status_code == 200


class ModelsUpstream(LoopbackServer):
    """An Anthropic-format upstream that lists models and records the keys it was asked with."""

    def __init__(self):
        super().__init__()
        self.keys: list[str | None] = []

    def routes(self, app):
        app.router.add_get("/v1/models", self._models)

    async def _models(self, request):
        self.keys.append(request.headers.get("x-api-key"))
        return web.json_response({"data": [{"id": "claude-x", "type": "model"}], "has_more": False})


def test_models_listing_never_sends_the_gateway_key_upstream(tmp_path):
    """/v1/models asks a !PASSTHRU provider for its models with the client's key: never with a
    gateway key that came in as the client's key."""
    up = ModelsUpstream()
    with LiveGateway(spec(True), {"oa": FakeOpenAI(), "an": up}, tmp_path) as gw:
        r = httpx.get(gw.base_url + "/v1/models", headers={"x-api-key": CI}, timeout=15)
        assert r.status_code == 200
        r = httpx.get(gw.base_url + "/v1/models", timeout=15,
                      headers={"x-vandamme-key": CI, "x-api-key": PROVIDER_KEY})
        assert r.status_code == 200 and "claude-x" in r.text
    assert CI not in up.keys and up.keys[-1] == PROVIDER_KEY  # never the gateway key; the client's own when given

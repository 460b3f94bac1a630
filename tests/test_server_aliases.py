"""GET /v1/aliases and alias resolution through the real server."""
import anthropic
import httpx

from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway


def spec(urls):
    return f"""
version: 1
default_provider: a
providers:
  a:
    format: anthropic
    base_url: "{urls['a']}"
    api_keys: [k-000000000000]
    aliases: {{haiku: claude-3-5-haiku-latest, sonnet: claude-sonnet-4-5}}
aliases:
  fast: "a:claude-fast"
"""


def test_aliases_endpoint_and_resolution(tmp_path):
    a = FakeAnthropic()
    with LiveGateway(spec, {"a": a}, tmp_path, environ={"VDM_ALIAS_BIG": "a:claude-opus-4-1"}) as gw:
        data = httpx.get(gw.base_url + "/v1/aliases", timeout=10).json()["data"]
        by_name = {d["name"]: d for d in data}
        assert by_name["haiku"]["target"] == "a:claude-3-5-haiku-latest"
        assert by_name["haiku"]["source"].endswith("gateway.yaml:9:15")  # line 1 of the spec text is blank
        assert by_name["big"]["source"] == "env:VDM_ALIAS_BIG"
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        for asked, sent in [("claude-3-5-haiku-20241022", "claude-3-5-haiku-latest"),
                            ("FAST", "claude-fast"), ("big", "claude-opus-4-1"),
                            ("a:sonnet", "claude-sonnet-4-5"), ("unknown-model", "unknown-model")]:
            msg = c.messages.create(model=asked, max_tokens=5, messages=[{"role": "user", "content": "x"}])
            assert a.requests[-1]["json"]["model"] == sent
            assert msg.model == sent  # passthrough: the upstream's answer as it came

"""One token estimate: the ``min_input_tokens`` route condition and ``count_tokens`` give the
same number for the same body (vandamme.transforms.token_estimate.estimate_tokens), and the routes still
estimate only when a route asks."""
import base64
import struct

import httpx
import msgspec
import orjson

from fakes.openai_upstream import FakeOpenAI
from harness import LiveGateway
from vandamme.transforms.aliases import AliasIndex
from vandamme.transforms.request_stages import RequestHead
from vandamme.transforms.routing import RequestFeatures, Router
from vandamme.transforms.token_estimate import estimate_tokens
from vandamme.sources import SourceMap

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + struct.pack(">II", 800, 600)
                       + b"\x08\x06\x00\x00\x00" + b"\x00" * 16).decode()

BODY = {
    "model": "gpt-4o", "max_tokens": 100,
    "system": [{"type": "text", "text": "You are a careful assistant. " * 20}],
    "tools": [{"name": "get_weather", "description": "Weather for a city",
               "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
    "messages": [
        {"role": "user", "content": [
            {"type": "text", "text": "What is in this picture? Also: 日本語のテキスト。"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG + "A" * 40000}}]},
        {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "sunny, 24 °C " * 30}]},
    ],
}


def router(*routes: dict) -> Router:
    data = {"default_provider": "openai",
            "providers": {"openai": {"format": "openai", "base_url": "https://x", "aliases": {}}},
            "routes": list(routes)}
    return Router.build(data, SourceMap(), AliasIndex.build(data, SourceMap()))


def over(n: int) -> dict:
    return {"match": {"min_input_tokens": n}, "to": "openai:big"}


def test_route_condition_uses_the_count_tokens_estimate():
    n = estimate_tokens(BODY)
    assert RequestFeatures.from_body(BODY).input_tokens == n
    assert router(over(n)).match(RequestFeatures.from_body(BODY)) is not None
    assert router(over(n + 1)).match(RequestFeatures.from_body(BODY)) is None


def test_estimate_is_lazy():
    head = msgspec.json.decode(orjson.dumps(BODY), type=RequestHead)
    decoded = []

    def full_body():
        decoded.append(1)
        return BODY

    features = RequestFeatures.from_head(head, {}, full_body)
    assert router({"match": {"tools": True}, "to": "openai:m"}, over(1)).match(features)
    assert decoded == []  # no route asked: the body was never decoded, nothing estimated
    assert features.input_tokens == estimate_tokens(BODY) == features.input_tokens
    assert decoded == [1]  # decoded and estimated once


def spec_for(n: int):
    def spec(urls):
        providers = "".join(f"""
  {name}:
    format: openai
    base_url: "{urls[name]}"
    api_keys: [sk-{name}-0123456789]
    models: [gpt-4o]
""" for name in ("small", "exact", "over"))
        return f"""
version: 1
server: {{max_retries: 0}}
default_provider: small
providers:{providers}
routes:
  - {{match: {{min_input_tokens: {n + 1}}}, to: "over:gpt-4o"}}
  - {{match: {{min_input_tokens: {n}}}, to: "exact:gpt-4o"}}
"""
    return spec


def test_e2e_count_tokens_and_route_agree(tmp_path):
    n = estimate_tokens(BODY)
    fakes = {name: FakeOpenAI() for name in ("small", "exact", "over")}
    with LiveGateway(spec_for(n), fakes, tmp_path) as gw:
        count = {k: v for k, v in BODY.items() if k != "max_tokens"}
        r = httpx.post(gw.base_url + "/v1/messages/count_tokens", content=orjson.dumps(count),
                       headers={"content-type": "application/json"}, timeout=15)
        assert r.status_code == 200 and r.json() == {"input_tokens": n}
        r = httpx.post(gw.base_url + "/v1/messages", content=orjson.dumps(BODY),
                       headers={"content-type": "application/json"}, timeout=15)
        assert r.status_code == 200
    assert [len(f.requests) for f in fakes.values()] == [0, 1, 0]  # small, exact, over

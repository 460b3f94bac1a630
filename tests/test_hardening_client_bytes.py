"""Client bytes that used to produce 500s are 400 invalid_request_error saying what is wrong, and a
client's model string can never change the Azure upstream path or query (real server, fake
upstreams on 127.0.0.1)."""
from __future__ import annotations

import httpx
import pytest

from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import FakeOpenAI
from harness import LiveGateway


def spec(u):
    return f"""
version: 1
server: {{max_retries: 0}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [sk-oa-0123456789]}}
  an: {{format: anthropic, base_url: "{u['an']}", api_keys: [sk-an-0123456789]}}
  az:
    format: openai
    api_style: azure
    api_version: "2024-10-21"
    base_url: "{u['az']}"
    api_keys: [az-0123456789]
    deployments: {{gpt-4o: prod-4o.v2}}
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    fakes = {"oa": FakeOpenAI(), "an": FakeAnthropic(), "az": FakeOpenAI()}
    with LiveGateway(spec, fakes, tmp_path_factory.mktemp("g")) as gw:
        gw.fakes = fakes
        yield gw


MSG = b'"messages":[{"role":"user","content":"a"}]'
DEEP = b'{"a":' * 10000 + b"1" + b"}" * 10000
CASES = {
    "invalid UTF-8 in a string": (b'{"model":"gpt-4o","max_tokens":5,"messages":[{"role":"user","content":"a\xff"}]}',
                                  "not valid UTF-8"),
    "invalid UTF-8 in the model": (b'{"model":"gpt\xff","max_tokens":5,' + MSG + b"}", "not valid UTF-8"),
    "UTF-8-encoded surrogate in tools": (b'{"model":"gpt-4o","max_tokens":5,"tools":[{"name":"t\xed\xa0\x80",'
                                         b'"input_schema":{"type":"object"}}],' + MSG + b"}", "UTF-8"),
    "surrogate escape in system": (b'{"model":"gpt-4o","max_tokens":5,"system":"\\ud800x",' + MSG + b"}", "JSON"),
    "10,000-deep metadata": (b'{"model":"gpt-4o","max_tokens":5,"metadata":' + DEEP + b"," + MSG + b"}", "nests too deeply"),
    "10,000-deep tool schema": (b'{"model":"gpt-4o","max_tokens":5,"tools":[{"name":"t","input_schema":' + DEEP
                                + b"}]," + MSG + b"}", "nests too deeply"),
    "temperature 1e400": (b'{"model":"gpt-4o","max_tokens":5,"temperature":1e400,' + MSG + b"}", "temperature"),
}


def post(gw, path, body, **headers):
    return httpx.post(gw.base_url + path, content=body, timeout=15,
                      headers={"content-type": "application/json", **headers})


def assert_400(r, needle):
    assert r.status_code == 400, r.text
    err = r.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert needle in err["error"]["message"], err


@pytest.mark.parametrize("case", list(CASES))
def test_bad_bytes_are_400(live, case):
    body, needle = CASES[case]
    assert_400(post(live, "/v1/messages", body), needle)
    ok = post(live, "/v1/messages", b'{"model":"gpt-4o","max_tokens":5,' + MSG + b"}")
    assert ok.status_code == 200  # and the gateway serves on


@pytest.mark.parametrize("case", ["invalid UTF-8 in a string", "10,000-deep metadata"])
def test_bad_bytes_on_count_tokens_are_400(live, case):
    body, _ = CASES[case]
    r = post(live, "/v1/messages/count_tokens", body.replace(b'"max_tokens":5,', b""))
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error", r.text


@pytest.mark.parametrize("model", ["az:../../../admin?x=1#", "az:x?api-version=evil&", "az:a/b", "az:..",
                                   "az:x#frag", "az:" + "x" * 65, "az:x%2F..%2Fadmin"])
def test_azure_model_cannot_change_the_upstream_path(live, model):
    before = len(live.fakes["az"].requests)
    r = httpx.post(live.base_url + "/v1/messages", timeout=15,
                   json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]})
    assert_400(r, "cannot be an Azure deployment name")
    assert len(live.fakes["az"].requests) == before  # nothing was sent


def test_azure_valid_deployments(live):
    for model, path in (("az:gpt-4o", "/openai/deployments/prod-4o.v2/chat/completions"),
                        ("az:my_dep-1", "/openai/deployments/my_dep-1/chat/completions")):
        r = httpx.post(live.base_url + "/v1/messages", timeout=15,
                       json={"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "a"}]})
        assert r.status_code == 200, r.text
        sent = live.fakes["az"].requests[-1]
        assert sent["path"] == "/v1" + path and sent["query"] == {"api-version": "2024-10-21"}  # fake base_url ends in /v1

"""In-process handler tests with sanic-testing's ASGI client (no network)."""
import pytest

from vandamme.engine.compiler import compile_gateway
from vandamme.engine.loader import load_spec
from vandamme.engine.server import create_app


@pytest.fixture
def app():
    loaded = load_spec("specs/", {"OPENAI_API_KEY": "sk-test-abcdefghijklmnop",
                                  "ANTHROPIC_API_KEY": "!PASSTHRU"})
    return create_app(compile_gateway(loaded))


async def test_health_lists_every_preset_without_keys(app):
    _, resp = await app.asgi_client.get("/health")
    assert resp.status == 200
    by_name = {p["name"]: p for p in resp.json["providers"]}
    assert by_name["openai"]["active"] is True and by_name["openai"]["keys"] == 1
    assert by_name["anthropic"]["keys"] == "passthrough"
    assert by_name["groq"]["active"] is False and "GROQ_API_KEY" in by_name["groq"]["inactive_reason"]
    assert "sk-test" not in resp.text


async def test_bad_json_is_anthropic_400(app):
    _, resp = await app.asgi_client.post("/v1/messages", content=b"{", headers={"content-type": "application/json"})
    assert resp.status == 400
    assert resp.json == {"type": "error", "error": {"type": "invalid_request_error",
                                                    "message": resp.json["error"]["message"]}}


async def test_passthrough_provider_without_client_key_is_401(app):
    _, resp = await app.asgi_client.post("/v1/messages", json={
        "model": "anthropic:claude-sonnet-4-5", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status == 401
    assert resp.json["error"]["type"] == "authentication_error"


async def test_inactive_provider_says_how_to_enable(app):
    _, resp = await app.asgi_client.post("/v1/messages", json={
        "model": "groq:llama-3.3-70b", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
    assert resp.status in (400, 404)
    assert "GROQ_API_KEY" in resp.json["error"]["message"]

"""Upstream errors -> Anthropic errors; token estimate."""
import base64
import struct

import orjson
import pytest
from multidict import CIMultiDict

from vandamme.transforms.errors import GatewayError
from vandamme.transforms.token_estimate import (
    IMAGE_DEFAULT_TOKENS,
    estimate_tokens,
    image_size,
    image_tokens,
    text_tokens,
)
from vandamme.transforms.upstream_errors import connection_error, timeout_error, upstream_error


def openai_error(message, etype="invalid_request_error", code=None):
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None,
                                   "code": code}})


@pytest.mark.parametrize("status,etype", [
    (400, "invalid_request_error"), (401, "authentication_error"), (403, "permission_error"),
    (404, "not_found_error"), (413, "request_too_large"), (429, "rate_limit_error"),
    (500, "api_error"), (502, "api_error"), (503, "overloaded_error"),
    (529, "overloaded_error"), (422, "invalid_request_error"), (418, "invalid_request_error"),
])
def test_status_mapping(status, etype):
    err = upstream_error(status, openai_error("bad thing"), {})
    assert isinstance(err, GatewayError)
    assert err.status == status and err.error_type == etype and err.message == "bad thing"
    assert orjson.loads(err.body()) == {"type": "error", "error": {"type": etype,
                                                                   "message": "bad thing"}}


def test_retry_after_kept_case_insensitive():
    err = upstream_error(429, openai_error("slow down"), CIMultiDict({"Retry-After": "7"}))
    assert err.headers == {"retry-after": "7"}
    err = upstream_error(429, openai_error("slow down"), {"Retry-After": "3"})
    assert err.headers == {"retry-after": "3"}
    assert upstream_error(500, b"", {}).headers == {}


def test_anthropic_shaped_body_keeps_type():
    body = orjson.dumps({"type": "error", "error": {"type": "overloaded_error",
                                                    "message": "Overloaded"}})
    err = upstream_error(529, body, {})
    assert err.error_type == "overloaded_error" and err.message == "Overloaded"


@pytest.mark.parametrize("body,message", [
    (b'{"detail": "Not Found"}', "Not Found"),
    (b'{"message": "quota"}', "quota"),
    (b'{"error": "plain string"}', "plain string"),
    (b'{"detail": [{"loc": ["body"], "msg": "x"}]}', '[{"loc":["body"],"msg":"x"}]'),
])
def test_other_json_shapes(body, message):
    assert upstream_error(400, body, {}).message == message


def test_non_json_body():
    err = upstream_error(502, b"<html><body>Bad   Gateway</body></html>", {})
    assert err.status == 502 and err.error_type == "api_error"
    assert err.message == "upstream returned HTTP 502: <html><body>Bad Gateway</body></html>"
    assert upstream_error(500, b"", {}).message == "upstream returned HTTP 500"


def test_invalid_status_becomes_502():
    assert upstream_error(200, b"{}", {}).status == 502


def test_long_message_truncated():
    err = upstream_error(400, openai_error("x" * 5000), {})
    assert len(err.message) < 1100


def test_timeout_and_connection_errors():
    t = timeout_error()
    assert t.status == 504 and t.error_type == "timeout_error"
    assert timeout_error(30).message == "upstream did not answer within 30 s"
    c = connection_error("openai")
    assert c.status == 502 and c.error_type == "api_error"
    assert c.message == "could not connect to provider 'openai'"


# ------------------------------------------------------------------ token estimate


def png_b64(w, h):
    head = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + struct.pack(">II", w, h)
    return base64.b64encode(head + b"\x08\x02\x00\x00\x00" + b"\x00" * 40).decode()


def jpeg_b64(w, h):
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, h, w, 1) + b"\x01\x11\x00"
    return base64.b64encode(b"\xff\xd8" + app0 + sof + b"\x00" * 20).decode()


def gif_b64(w, h):
    return base64.b64encode(b"GIF89a" + struct.pack("<HH", w, h) + b"\x00" * 30).decode()


def test_image_size_headers():
    assert image_size(png_b64(640, 480)) == (640, 480)
    assert image_size(jpeg_b64(1024, 768)) == (1024, 768)
    assert image_size(gif_b64(10, 20)) == (10, 20)
    assert image_size("bm90IGFuIGltYWdl") is None


def test_image_tokens_formula():
    assert image_tokens(200, 200) == 54  # Anthropic docs: 200x200 ~ 54 tokens
    assert image_tokens(1000, 1000) == 1334  # 1000x1000 ~ 1334 tokens
    assert 1530 <= image_tokens(1092, 1092) <= 1600  # 1092x1092 ~ 1590 tokens
    assert image_tokens(4000, 4000) <= 1600  # downscaled like the API does


def test_estimate_text_close_to_rule_of_thumb():
    text = "The quick brown fox jumps over the lazy dog. " * 100
    n = estimate_tokens({"messages": [{"role": "user", "content": text}]})
    # cl100k_base: 10 tokens per sentence -> 1000 tokens (+ overheads)
    assert 900 <= n <= 1300


def test_estimate_counts_every_part():
    base = {"messages": [{"role": "user", "content": "hello"}]}
    n0 = estimate_tokens(base)
    with_system = estimate_tokens({**base, "system": "You are helpful. " * 20})
    with_tools = estimate_tokens({**base, "tools": [{"name": "get_weather",
                                                     "description": "Get weather",
                                                     "input_schema": {"type": "object",
                                                                      "properties": {}}}]})
    img = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                       "data": png_b64(200, 200)}}
    url_img = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    with_img = estimate_tokens({"messages": [{"role": "user", "content": [img]}]})
    with_url_img = estimate_tokens({"messages": [{"role": "user", "content": [url_img]}]})
    assert n0 < with_system and n0 < with_tools
    assert 54 <= with_img < 80
    assert with_url_img >= IMAGE_DEFAULT_TOKENS
    tool_turn = estimate_tokens({"messages": [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                           "input": {"path": "/a/b/c.py"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t",
                                      "content": "file contents " * 50}]}]})
    assert tool_turn > 150


def test_text_tokens_non_ascii():
    assert text_tokens("abcd") == 1
    assert text_tokens("日本語") == 3

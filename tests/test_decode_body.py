"""decode_body: the fields conversion reads, with repeated system/tools decoded once."""
import orjson
from multidict import CIMultiDict

from vandamme.kernel import Context
from vandamme.transforms.request_stages import DecodeBody, RepeatedParts

TOOLS = [{"name": f"t{i}", "description": "d", "input_schema": {"type": "object"}} for i in range(3)]


def body(text):
    return {"model": "m", "max_tokens": 9, "system": [{"type": "text", "text": "sys"}], "tools": TOOLS,
            "messages": [{"role": "user", "content": text}], "context_management": {"x": 1},
            "temperature": 0.5, "stream": True}


async def run(stage, b):
    ctx = Context("r", orjson.dumps(b), CIMultiDict())
    await stage.run(ctx)
    return ctx.body


async def test_fields_match_a_full_decode_minus_anthropic_only_options():
    stage = DecodeBody()
    got = await run(stage, body("hi"))
    expected = body("hi")
    del expected["context_management"]
    assert got == expected


async def test_repeated_tools_and_system_are_decoded_once():
    stage = DecodeBody(parts=RepeatedParts(size=2))
    first = await run(stage, body("one"))
    second = await run(stage, body("two"))
    assert second["messages"][0]["content"] == "two"
    assert second["tools"] is first["tools"] and second["system"] is first["system"]
    for n in range(3):  # other tool sets push the old ones out: the cache stays bounded
        await run(stage, {**body("x"), "tools": TOOLS[:n]})
    assert len(stage.parts._items) == 2

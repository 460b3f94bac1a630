"""The passthrough body: the model value spliced in place, the rest byte for byte."""
import orjson
import pytest

from vandamme.transforms.passthrough import splice_model


def test_first_key_is_spliced_even_with_nested_model_keys():
    raw = (b'{"model": "sonnet", "tools": [{"name": "Agent", "input_schema": {"properties": '
           b'{"model": {"type": "string"}}}}], "messages": []}')
    out = splice_model(raw, "sonnet", "claude-sonnet-4-5")
    assert out == raw.replace(b'"sonnet"', b'"claude-sonnet-4-5"', 1)


def test_single_occurrence_anywhere_is_the_top_level_key():
    raw = b'{"max_tokens": 5, "messages": [{"role": "user", "content": "say \\"model\\""}], "model":"x"}'
    out = splice_model(raw, "x", "y")
    assert orjson.loads(out)["model"] == "y" and out.endswith(b'"model":"y"}')


@pytest.mark.parametrize("raw", [
    b'{"max_tokens": 5, "tools": [{"input_schema": {"model": 1}}], "model": "x"}',  # ambiguous: not first, not unique
    b'{"model": "other", "x": 1}',  # value differs from what the head decoded (duplicate keys)
])
def test_ambiguous_bodies_are_left_to_reserialisation(raw):
    assert splice_model(raw, "x", "y") is None


def test_unicode_and_escapes_in_model_names():
    raw = orjson.dumps({"model": "modèle/\"q\"", "messages": []})
    out = splice_model(raw, "modèle/\"q\"", "m2")
    assert orjson.loads(out) == {"model": "m2", "messages": []}

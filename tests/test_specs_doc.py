"""docs/specs.md documents every property of the schema; the schema is well-formed."""
from __future__ import annotations

import json
import pathlib

from jsonschema import Draft202012Validator

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "schemas" / "vandamme.schema.json").read_text())
DOC = (ROOT / "docs" / "specs.md").read_text()


def walk(schema, path=()):
    """Yield (path, name, property schema) for every property, recursively."""
    if not isinstance(schema, dict):
        return
    for name, sub in (schema.get("properties") or {}).items():
        yield path + (name,), name, sub
        yield from walk(sub, path + (name,))
    for key in ("additionalProperties", "items"):
        if isinstance(schema.get(key), dict):
            yield from walk(schema[key], path + (f"<{key}>",))


def test_schema_is_valid_2020_12():
    Draft202012Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_every_property_documented():
    missing = [".".join(p) for p, name, _ in walk(SCHEMA) if f"`{name}`" not in DOC]
    assert not missing, f"properties missing from docs/specs.md: {missing}"


def test_every_property_has_description():
    missing = [".".join(p) for p, _, sub in walk(SCHEMA) if not sub.get("description")]
    assert not missing, missing


def test_objects_are_closed():
    def objects(schema, path=()):
        if isinstance(schema, dict):
            if schema.get("type") == "object" or "properties" in schema:
                yield path, schema
            for k, v in schema.items():
                if isinstance(v, dict):
                    yield from objects(v, path + (k,))
    for path, obj in objects(SCHEMA):
        assert "additionalProperties" in obj, path
        if "properties" in obj:
            assert obj["additionalProperties"] is False, path


def test_doc_mentions_merge_env_and_editor_tip():
    for needle in ("# yaml-language-server: $schema=", "replaced whole", "env:PORT", "OPENAI_API_KEY"):
        assert needle in DOC, needle


def test_schema_middleware_part_matches_the_registry():
    """schemas/vandamme.schema.json's middleware definitions are generated from the stage
    registry (`make schema`): every built-in stage and its config schema, so editors see them."""
    from vandamme.engine.schema import main

    assert main([]) == 0, "run `make schema`"
    item = SCHEMA["$defs"]["middleware_item"]
    names = item["anyOf"][0]["enum"]
    assert {"inject_system", "drop_params", "set_params", "clamp", "redact", "gemini_thought_signatures"} <= set(names)
    for where in (SCHEMA["properties"], SCHEMA["properties"]["routes"]["items"]["properties"],
                  SCHEMA["properties"]["providers"]["additionalProperties"]["properties"]):
        assert where["middleware"]["$ref"] == "#/$defs/middleware_list"

"""The spec schema's middleware part, generated from the stage registry.

``schemas/vandamme.schema.json`` carries, under ``$defs``, one definition of a middleware item
built from every declarable built-in stage and its config schema, so editors complete stage names
and check their configs. `make schema` (``python -m vandamme.engine.schema --write``) regenerates it; a
test fails when the file and the registry disagree. Installed plugins and ``use:`` stages are
checked by `vandamme validate`, which loads them.
"""
from __future__ import annotations

import json
import sys
from typing import Any

from vandamme.transforms.registry import Registry

from .validation import SCHEMA_PATH

MIDDLEWARE_REF = {"$ref": "#/$defs/middleware_list"}


def middleware_defs(registry: Registry) -> dict[str, Any]:
    specs = [s for s in registry if s.declarable]
    item = {
        "description": "A middleware stage: its name, {name: config}, or {use: 'package.module:Class', with: config}.",
        "anyOf": [
            {"type": "string", "enum": [s.name for s in specs], "description": "A stage with its default config."},
            {"type": "object", "minProperties": 1, "maxProperties": 1, "additionalProperties": False,
             "description": "One stage name mapped to its config.",
             "properties": {s.name: {**s.config_schema, "description": s.description} for s in specs}},
            {"type": "object", "required": ["use"], "additionalProperties": False,
             "description": "A user stage by import path.",
             "properties": {
                 "use": {"type": "string", "pattern": "^[A-Za-z_][\\w.]*:[A-Za-z_][\\w.]*$",
                         "description": "package.module:ClassName of a vandamme.kernel.Middleware subclass."},
                 "with": {"type": "object", "additionalProperties": True,
                          "description": "The stage's config (checked against its config_schema)."},
             }},
        ],
    }
    return {
        "middleware_list": {"type": "array", "items": {"$ref": "#/$defs/middleware_item"},
                            "description": "Middleware stages in order: requests pass them in this "
                                           "order, answers (and each stream event) in reverse."},
        "middleware_item": item,
    }


def with_middleware(schema: dict, registry: Registry) -> dict:
    """``schema`` with its middleware definitions regenerated from ``registry``."""
    out = dict(schema)
    out["$defs"] = {**schema.get("$defs", {}), **middleware_defs(registry)}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    current = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    fresh = with_middleware(current, Registry(plugins=False))
    text = json.dumps(fresh, indent=2, ensure_ascii=False) + "\n"
    if "--write" in argv:
        SCHEMA_PATH.write_text(text, encoding="utf-8")
        return 0
    if fresh != current:
        print(f"{SCHEMA_PATH} is out of date: run `make schema`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

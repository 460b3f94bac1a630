"""Built-in middleware: small request transforms an operator declares under ``middleware:``.

Each is a :class:`~vandamme.kernel.Middleware` with its config schema (defaults included); the
registry declares them and the compiler places them. They replace top-level fields of the request
and never mutate nested values in place (``system`` and ``tools`` may be shared between requests).
"""
from __future__ import annotations

import re
from typing import Any

from vandamme.kernel import Context, Middleware

# Fields no middleware may remove or replace: the request would stop being a request.
PROTECTED_FIELDS = ("model", "messages")
_FIELD_NAME = {"type": "string", "minLength": 1, "not": {"enum": list(PROTECTED_FIELDS)},
               "description": "A top-level request field (not `model` or `messages`)."}


def _bounds(what: str) -> dict:
    return {"type": "object", "additionalProperties": False, "description": f"Bounds on `{what}`.",
            "properties": {"min": {"type": "number", "description": f"Lowest `{what}` sent."},
                           "max": {"type": "number", "description": f"Highest `{what}` sent."}}}


class InjectSystem(Middleware):
    """Add text to the system prompt (before or after what the client sent)."""

    name = "inject_system"
    config_schema = {
        "type": "object", "additionalProperties": False, "required": ["text"],
        "properties": {
            "text": {"type": "string", "minLength": 1, "description": "The text to add."},
            "position": {"enum": ["prepend", "append"], "default": "prepend",
                         "description": "`prepend` (before the client's system prompt) or `append`."},
            "separator": {"type": "string", "default": "\n\n",
                          "description": "Between the text and a string system prompt."},
        },
        "examples": [{"text": "Follow the ACME coding policy."}],
    }

    def __init__(self, config):
        super().__init__(config)
        self.text = config["text"]
        self.first = config["position"] == "prepend"
        self.separator = config["separator"]

    def on_request(self, ctx: Context, body: dict) -> None:
        system = body.get("system")
        if not system:
            body["system"] = self.text
        elif isinstance(system, str):
            parts = (self.text, system) if self.first else (system, self.text)
            body["system"] = self.separator.join(parts)
        elif isinstance(system, list):
            block = {"type": "text", "text": self.text}
            body["system"] = [block, *system] if self.first else [*system, block]


class DropParams(Middleware):
    """Remove top-level request fields (for example a parameter a provider rejects)."""

    name = "drop_params"
    config_schema = {
        "type": "object", "additionalProperties": False, "required": ["fields"],
        "properties": {"fields": {"type": "array", "minItems": 1, "items": _FIELD_NAME,
                                  "description": "Field names to remove."}},
        "examples": [{"fields": ["top_k"]}],
    }

    def __init__(self, config):
        super().__init__(config)
        self.fields = tuple(config["fields"])

    def on_request(self, ctx: Context, body: dict) -> None:
        for name in self.fields:
            body.pop(name, None)


class SetParams(Middleware):
    """Set top-level request fields (``override: false`` only fills in missing ones)."""

    name = "set_params"
    config_schema = {
        "type": "object", "additionalProperties": False, "required": ["values"],
        "properties": {
            "values": {"type": "object", "minProperties": 1, "description": "Field name to value.",
                       "propertyNames": {"not": {"enum": list(PROTECTED_FIELDS)}},
                       "additionalProperties": True},
            "override": {"type": "boolean", "default": True,
                         "description": "Replace a value the client sent (false: only set missing fields)."},
        },
        "examples": [{"values": {"temperature": 0.2}}],
    }

    def __init__(self, config):
        super().__init__(config)
        self.values = tuple(config["values"].items())
        self.override = config["override"]

    def on_request(self, ctx: Context, body: dict) -> None:
        for name, value in self.values:
            if self.override or name not in body:
                body[name] = value


class Clamp(Middleware):
    """Keep ``max_tokens``, ``temperature`` and ``top_p`` within bounds."""

    name = "clamp"
    config_schema = {
        "type": "object", "additionalProperties": False, "minProperties": 1,
        "properties": {
            "max_tokens": {"type": "integer", "minimum": 1, "description": "Highest `max_tokens` sent."},
            "temperature": _bounds("temperature"),
            "top_p": _bounds("top_p"),
        },
        "examples": [{"max_tokens": 8000}],
    }

    def __init__(self, config):
        super().__init__(config)
        rules: list[tuple[str, Any, Any]] = []
        if "max_tokens" in config:
            rules.append(("max_tokens", None, config["max_tokens"]))
        for name in ("temperature", "top_p"):
            if name in config:
                rules.append((name, config[name].get("min"), config[name].get("max")))
        self.rules = tuple(rules)

    def on_request(self, ctx: Context, body: dict) -> None:
        for name, low, high in self.rules:
            value = body.get(name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if high is not None and value > high:
                body[name] = high
            elif low is not None and value < low:
                body[name] = low


class Redact(Middleware):
    """Replace text matching patterns in the system prompt and the messages' text."""

    name = "redact"
    config_schema = {
        "type": "object", "additionalProperties": False, "required": ["patterns"],
        "properties": {
            "patterns": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1},
                         "description": "Regular expressions (Python syntax)."},
            "replacement": {"type": "string", "default": "[REDACTED]",
                            "description": "What each match becomes."},
        },
        "examples": [{"patterns": ["sk-[A-Za-z0-9]{8,}"]}],
    }

    def __init__(self, config):
        super().__init__(config)
        self.pattern = re.compile("|".join(f"(?:{p})" for p in config["patterns"]))
        self.replacement = config["replacement"]

    def _text(self, value: Any) -> Any:
        """``value`` with matches replaced; a new object wherever something changed."""
        if isinstance(value, str):
            return self.pattern.sub(self.replacement, value)
        if isinstance(value, list):
            return [self._block(b) for b in value]
        return value

    def _block(self, block: Any) -> Any:
        if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
            return {**block, "text": self.pattern.sub(self.replacement, block["text"])}
        return block

    def on_request(self, ctx: Context, body: dict) -> None:
        if "system" in body:
            body["system"] = self._text(body["system"])
        messages = body.get("messages")
        if isinstance(messages, list):
            body["messages"] = [{**m, "content": self._text(m.get("content"))} if isinstance(m, dict) else m
                                for m in messages]


BUILTIN: tuple[type[Middleware], ...] = (InjectSystem, DropParams, SetParams, Clamp, Redact)

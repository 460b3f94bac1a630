"""User stages for the tests, named in specs by import path (``use: "stage_samples:Mark"``)."""
from __future__ import annotations

import asyncio

from vandamme.kernel import OPENAI, Middleware


class Mark(Middleware):
    """Appends its mark to the system prompt, and to the text of the answer (buffered and each
    streamed text delta): shows the order of request and response hooks."""

    name = "mark"
    config_schema = {"type": "object", "additionalProperties": False, "required": ["mark"],
                     "properties": {"mark": {"type": "string", "description": "The mark."}},
                     "examples": [{"mark": "M"}]}

    async def on_request(self, ctx, body):  # an async hook
        await asyncio.sleep(0)
        system = body.get("system") or ""
        body["system"] = f"{system}[{self.config['mark']}]"

    def on_response(self, ctx, body):
        for block in body.get("content") or ():
            if block.get("type") == "text":
                block["text"] += f"<{self.config['mark']}>"

    def on_event(self, ctx, event, data):
        if event == "content_block_stop":
            seen = ctx.slot(self).setdefault("stops", 0)
            ctx.slot(self)["stops"] = seen + 1
        if event == "message_delta":
            data.setdefault("usage", {})["output_tokens"] = 1000 + ctx.slot(self).get("stops", 0)
        if event == "ping":
            return False  # dropped
        return None


class OpenAISeed(Middleware):
    """An OpenAI-side stage: sets ``seed`` on the converted request."""

    name = "openai_seed"
    consumes = OPENAI
    config_schema = {"type": "object", "additionalProperties": False,
                     "properties": {"seed": {"type": "integer", "default": 7, "description": "Seed."}}}

    def on_request(self, ctx, body):
        body["seed"] = self.config["seed"]


class NotAStage:
    name = "nope"


def broken_import():  # referenced as "stage_samples:missing" in tests
    raise AssertionError("never called")

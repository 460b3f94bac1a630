"""An example Vandamme stage plugin: every hook of a middleware in one small class.

* on the way in (``on_request``) it asks the model for at most N words;
* on a non-streamed answer (``on_response``) it cuts each text block to N words;
* on a streamed answer (``on_event``) it counts words across text deltas, cuts the delta that
  crosses the limit and drops the later ones.

Installed (``pip install examples/word-limit``), it is known by name through the
``vandamme.stages`` entry point::

    middleware:
      - word_limit: {words: 50}

Not installed, a spec can name it by import path::

    middleware:
      - use: "vandamme_word_limit:WordLimit"
        with: {words: 50}
"""
from __future__ import annotations

from vandamme.kernel import Context, Middleware


def _cut(text: str, budget: int) -> tuple[str, int]:
    """``text`` cut to ``budget`` words (whitespace kept), and the words it holds."""
    words = 0
    in_word = False
    for i, ch in enumerate(text):
        if ch.isspace():
            in_word = False
        elif not in_word:
            if words == budget:
                return text[:i].rstrip(), words
            words += 1
            in_word = True
    return text, words


class WordLimit(Middleware):
    """Ask for at most `words` words and hold the answer to it."""

    name = "word_limit"
    config_schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "words": {"type": "integer", "minimum": 1, "default": 100,
                      "description": "The most words an answer may have."},
            "instruction": {"type": "string", "default": "Answer in at most {words} words.",
                            "description": "Added to the system prompt; {words} is replaced."},
        },
        "examples": [{"words": 3}],
    }

    def __init__(self, config):
        super().__init__(config)
        self.words = config["words"]
        self.instruction = config["instruction"].replace("{words}", str(self.words))

    def on_request(self, ctx: Context, body: dict) -> None:
        system = body.get("system")
        block = {"type": "text", "text": self.instruction}
        if not system:
            body["system"] = self.instruction
        elif isinstance(system, str):
            body["system"] = system + "\n\n" + self.instruction
        else:  # a list of blocks: a new list, the client's may be shared
            body["system"] = [*system, block]

    def on_response(self, ctx: Context, body: dict) -> None:
        budget = self.words
        for block in body.get("content") or ():
            if block.get("type") == "text":
                block["text"], used = _cut(block["text"], budget)
                budget -= used

    def on_event(self, ctx: Context, event: str, data: dict) -> bool | None:
        if event != "content_block_delta" or data.get("delta", {}).get("type") != "text_delta":
            return None
        state = ctx.slot(self)  # per request (and per attempt)
        if state.get("done"):
            return False
        text = data["delta"]["text"]
        used = state.get("words", 0)
        if state.get("mid_word") and text[:1] and not text[0].isspace():
            used -= 1  # "Hel" + "lo": the first word goes on with one already counted
        cut, n = _cut(text, self.words - used)
        if len(cut) < len(text.rstrip()):  # the limit fell inside this delta
            state["done"] = True
            if not cut:
                return False
        data["delta"]["text"] = cut
        state["words"] = used + n
        state["mid_word"] = bool(text) and not text[-1].isspace()
        return None

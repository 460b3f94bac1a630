"""Gemini thought signatures (middleware ``gemini_thought_signatures``, declared per provider).

Gemini's OpenAI-compatible endpoint puts an opaque signature on tool calls
(``tool_calls[i].extra_content.google.thought_signature``) and, for thinking models, wants it
back on the same tool calls when the history is sent again. Anthropic clients drop fields they do
not know, so the gateway keeps them: `capture_thought_signatures` records tool-call id →
signature from the answers (JSON or stream), `restore_thought_signatures` puts them back on the
assistant tool calls of the next request. The cache is bounded (size) and entries expire (TTL);
it is per process unless a shared state store is configured (``state.redis_url``,
vandamme.transforms.shared_state): then every signature is also written through to Redis, and a restore that
misses locally asks Redis once for the tool calls it does not know (see docs/deploy.md).
"""
from __future__ import annotations

import time
from collections import OrderedDict

import orjson

from vandamme.kernel import BufferedResponse, StreamingResponse

from .sse import SSEDecoder


class SignatureCache:
    __slots__ = ("ttl", "max_size", "_items", "store", "_absent")

    def __init__(self, ttl: float = 3600.0, max_size: int = 10000, store=None):
        self.ttl = ttl
        self.max_size = max_size
        self._items: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self.store = store if store is not None and store.shared else None
        # tool call ids the shared store did not know either (asked once each, not every turn)
        self._absent: OrderedDict[str, float] = OrderedDict()
        if self.store is not None:
            self.store.attach_signatures(self)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def shared(self) -> bool:
        return self.store is not None

    def put(self, tool_call_id: str, signature: str) -> None:
        self._keep(tool_call_id, signature, time.monotonic() + self.ttl)
        if self.store is not None:
            self._absent.pop(tool_call_id, None)
            self.store.put_signature(tool_call_id, signature, self.ttl)

    def _keep(self, tool_call_id: str, signature: str, until: float) -> None:
        items = self._items
        items[tool_call_id] = (until, signature)
        items.move_to_end(tool_call_id)
        while len(items) > self.max_size:
            items.popitem(last=False)

    def get(self, tool_call_id: str) -> str | None:
        hit = self._items.get(tool_call_id)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._items[tool_call_id]
            return None
        return hit[1]

    async def fetch(self, ids: list[str]) -> None:
        """Shared store only: ask it (once, bounded) for the ``ids`` this process does not know and
        has not asked about before; what it knows is kept locally, what it does not is remembered
        as absent. A store that cannot answer changes nothing."""
        now = time.monotonic()
        absent = self._absent
        wanted = []
        for i in ids:
            if not i or i in self._items and self._items[i][0] >= now:
                continue
            seen = absent.get(i)
            if seen is not None and seen >= now:
                continue
            wanted.append(i)
        if not wanted:
            return
        found = await self.store.get_signatures(wanted)
        if found is None:
            return
        until = now + self.ttl
        for i in wanted:
            sig = found.get(i)
            if sig is not None:
                self._keep(i, sig, until)
            else:
                absent[i] = until
                absent.move_to_end(i)
        while len(absent) > self.max_size:
            absent.popitem(last=False)

    def live_items(self, now: float):
        """(id, signature, milliseconds left) of the entries alive now (written back to the shared
        store after an outage)."""
        return [(i, sig, int((until - now) * 1000)) for i, (until, sig) in list(self._items.items())
                if until > now]


def _signature(tool_call: dict) -> str | None:
    extra = tool_call.get("extra_content")
    if isinstance(extra, dict):
        google = extra.get("google")
        if isinstance(google, dict) and isinstance(google.get("thought_signature"), str):
            return google["thought_signature"]
    return None


class RestoreThoughtSignatures:
    """Request side: puts cached signatures back on the assistant tool calls being sent."""

    name = "gemini_thought_signatures"  # the way in
    __slots__ = ("cache",)

    def __init__(self, cache: SignatureCache):
        self.cache = cache

    async def run(self, ctx) -> None:
        cache = self.cache
        if not len(cache) and not cache.shared:
            return
        data = ctx.upstream_json  # the OpenAI request, while OpenAI-side stages work on it
        if data is not None:
            await self._restore(data)
            return
        body = ctx.upstream_body
        if body is None or b'"tool_calls"' not in body:
            return
        data = orjson.loads(body)
        if await self._restore(data):
            ctx.upstream_body = orjson.dumps(data)

    async def _restore(self, data: dict) -> bool:
        calls = [call for msg in data.get("messages", ()) for call in msg.get("tool_calls") or ()
                 if isinstance(call, dict) and _signature(call) is None]
        if not calls:
            return False
        if self.cache.shared:
            await self.cache.fetch([c.get("id") for c in calls if isinstance(c.get("id"), str)])
        changed = False
        for call in calls:
            sig = self.cache.get(call.get("id", ""))
            if sig is not None:
                call["extra_content"] = {"google": {"thought_signature": sig}}
                changed = True
        return changed


class CaptureThoughtSignatures:
    """Response side: records the signatures an answer carries, without holding the stream back."""

    name = "gemini_thought_signatures"  # the way out
    __slots__ = ("cache",)

    def __init__(self, cache: SignatureCache):
        self.cache = cache

    async def run(self, ctx) -> None:
        resp = ctx.response
        if isinstance(resp, BufferedResponse):
            if resp.status == 200 and b"thought_signature" in resp.body:
                try:
                    data = orjson.loads(resp.body)
                except orjson.JSONDecodeError:
                    return
                for choice in data.get("choices") or ():
                    for call in (choice.get("message") or {}).get("tool_calls") or ():
                        sig = _signature(call)
                        if sig and call.get("id"):
                            self.cache.put(call["id"], sig)
        elif isinstance(resp, StreamingResponse):
            resp.chunks = self._watch(resp.chunks)

    async def _watch(self, chunks):
        ids: dict[int, str] = {}  # tool call index -> id, for signatures that come without the id
        decoder = SSEDecoder()
        async for chunk in chunks:
            # look before passing the chunk on: the consumer may stop at the last one
            for event in decoder.feed(chunk):
                if b'"tool_calls"' in event.data:
                    self._capture_delta(event.data, ids)
            yield chunk

    def _capture_delta(self, data: bytes, ids: dict[int, str]) -> None:
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        for choice in event.get("choices") or ():
            for call in (choice.get("delta") or {}).get("tool_calls") or ():
                index = call.get("index", 0)
                if call.get("id"):
                    ids[index] = call["id"]
                sig = _signature(call)
                if sig and ids.get(index):
                    self.cache.put(ids[index], sig)


def thought_signature_stages(cache: SignatureCache) -> tuple[RestoreThoughtSignatures, CaptureThoughtSignatures]:
    """The ``gemini_thought_signatures`` middleware: restore on the way in, capture on the way out."""
    return RestoreThoughtSignatures(cache), CaptureThoughtSignatures(cache)

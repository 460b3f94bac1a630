"""API keys: a per-provider key ring (round robin, cooldown) and the `select_key` stage."""
from __future__ import annotations

import time

from .errors import GatewayError

PASSTHRU = "!PASSTHRU"


class KeyRing:
    """Round-robin over a provider's static keys, skipping keys that are cooling down.

    One ring per provider per process. The event loop is single-threaded, so ``next`` needs no
    lock: the counter moves once per call and concurrent requests get consecutive keys.

    With a shared state store (``state.redis_url``, vandamme.transforms.shared_state) a cooldown is also
    handed to the store, which publishes it to the other replicas; theirs come back through
    ``mirror``. ``order`` only ever reads the local mirror: no store call on the request path.
    """

    __slots__ = ("keys", "_next", "_cool_until", "default_cooldown", "provider", "store")

    def __init__(self, keys: tuple[str, ...], default_cooldown: float = 60.0, store=None, provider: str = ""):
        self.keys = keys
        self._next = 0
        self._cool_until: dict[int, float] = {}
        self.default_cooldown = default_cooldown
        self.provider = provider
        self.store = store if store is not None and store.shared and keys else None
        if self.store is not None:
            self.store.attach_ring(provider, self)

    def __len__(self) -> int:
        return len(self.keys)

    def order(self) -> list[int]:
        """Key indexes for one request: the next in turn first, then the others once each,
        keys in cooldown left out (unless every key is cooling down: then the one whose cooldown
        ends first, so the client gets the upstream's own answer rather than a guess)."""
        n = len(self.keys)
        start = self._next % n
        self._next = start + 1
        ring = [(start + i) % n for i in range(n)]
        if not self._cool_until:
            return ring
        now = time.monotonic()
        for i, until in list(self._cool_until.items()):
            if until <= now:
                del self._cool_until[i]
        ready = [i for i in ring if i not in self._cool_until]
        if ready:
            return ready
        return [min(self._cool_until, key=self._cool_until.get)]

    def cool_down(self, index: int, seconds: float | None) -> None:
        seconds = self.default_cooldown if seconds is None else seconds
        self._cool_until[index] = time.monotonic() + seconds
        if self.store is not None:
            self.store.cooldown(self.provider, self.keys[index], seconds)

    def mirror(self, index: int, seconds: float) -> None:
        """A cooldown another replica set (from the shared store): kept locally, the longer wins."""
        until = time.monotonic() + seconds
        if until > self._cool_until.get(index, 0.0):
            self._cool_until[index] = until

    def live_cooldowns(self, now: float):
        """(index, monotonic end) of the keys cooling down now."""
        return [(i, until) for i, until in self._cool_until.items() if until > now]

    def cooling(self) -> int:
        now = time.monotonic()
        return sum(1 for until in self._cool_until.values() if until > now)


def client_key(headers) -> str | None:
    """The client's own key: ``x-api-key``, else ``Authorization: Bearer``."""
    key = headers.get("x-api-key")
    if key:
        return key
    auth = headers.get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip() or None
    return None


class SelectKey:
    """Picks the key order for this request: static ring order, or the client's key (!PASSTHRU)."""

    name = "select_key"
    __slots__ = ("ring", "passthrough", "requires_key", "provider_name")

    def __init__(self, provider_name: str, ring: KeyRing | None, passthrough: bool, requires_key: bool):
        self.provider_name = provider_name
        self.ring = ring
        self.passthrough = passthrough
        self.requires_key = requires_key

    @property
    def detail(self) -> str:
        if self.passthrough:
            return "client key (!PASSTHRU)"
        if self.ring is None or not len(self.ring):
            return "no key" if not self.requires_key else "no key configured"
        return f"round robin over {len(self.ring)} key{'s' if len(self.ring) != 1 else ''}"

    async def run(self, ctx) -> None:
        if self.passthrough:
            if ctx.gateway_key_in_client_key:  # never send the gateway's own key upstream
                raise GatewayError(401, f"provider '{self.provider_name}' uses the client's own key: send the "
                                        "gateway key in x-vandamme-key and the provider key in x-api-key",
                                   "authentication_error")
            key = client_key(ctx.headers)
            if not key:
                raise GatewayError(401, f"provider '{self.provider_name}' uses the client's API key: "
                                        "send it as x-api-key or Authorization: Bearer", "authentication_error")
            ctx.api_key = key
            ctx.key_order = None
            return
        if self.ring is None or not len(self.ring):
            if self.requires_key:
                raise GatewayError(401, f"provider '{self.provider_name}' has no API key configured: "
                                        f"set {self.provider_name.upper()}_API_KEY", "authentication_error")
            ctx.api_key = None
            ctx.key_order = None
            return
        order = self.ring.order()
        ctx.key_order = order
        ctx.api_key = self.ring.keys[order[0]]

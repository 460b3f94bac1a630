"""Shared state: what the gateway's replicas must agree on, in-process or in Redis (``state:``).

Two things are state that replicas (worker processes, pods) must share:

* **key cooldowns** (`vandamme.transforms.keys.KeyRing`): a key that got a 429 is skipped for
  ``retry-after`` seconds; with several replicas, every one of them must skip it, or each would
  spend its own request finding out again;
* **Gemini thought signatures** (`vandamme.transforms.thought_signatures.SignatureCache`): a signature
  learnt from an answer served by one replica must be sent back by whichever replica serves the
  conversation's next turn.

Everything else a process keeps is a cache of what it can compute or fetch itself (the alias
memo, decoded ``system``/``tools``, the /v1/models listing: each replica fetches it within
``models_cache_ttl``, and a listing a few minutes staler on one replica changes no answer) or a
counter whose share is fair per replica (round robin over the keys: each replica's turn moves by
one per request, so the keys' shares differ by at most one per replica; sharing the counter would
cost a Redis round trip per request).

`LocalState` is the default: nothing is shared and nothing costs anything (rings and caches are
handed no store at all). `RedisState` (``state.redis_url`` or ``VDM_REDIS_URL``) keeps the hot path
free of Redis round trips where a local mirror suffices:

* cooldowns are written to Redis with an expiry (``SET … PX``) and published on a channel; every
  process subscribes and mirrors them into its rings, and reads the live ones (``SCAN`` +
  ``PTTL``) when it connects, so a new or reconnected replica catches up. Choosing a key reads
  only the local mirror.
* signatures are written through to Redis with the cache's TTL; a restore reads the local cache
  first and asks Redis (one ``MGET``, bounded by ``state.timeout``) only for tool calls it does
  not know; an answer that Redis does not know either is remembered as absent, so a long
  conversation asks once per tool call, not once per turn.

An outage never fails a request: every Redis call is bounded by ``state.timeout`` and its errors
are caught; the first failure logs ONE warning and marks the store down (``status.up`` false,
``status.errors_total`` counts failed calls, ``status.outages_total`` outages), after which the
process works in-process only, without trying Redis on the request path. A background task
reconnects with backoff (0.1 s doubling up to ``state.reconnect_max``), re-subscribes, catches up,
writes back what this process learnt meanwhile, and logs one "recovered" line.

Redis layout (prefix ``state.key_prefix``, default ``vandamme:``)::

    {prefix}cool:{provider}:{key id}   "1", PX = the cooldown; key id = 16 hex digits of the key's
                                       SHA-256 (the key itself is never stored)
    {prefix}sig:{tool call id}         the signature, PX = thought_signatures.cache_ttl
    channel {prefix}events             {"p": provider, "k": key id, "ms": cooldown, "o": sender}
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson
from loguru import logger

__all__ = ["StateStore", "StateStatus", "LocalState", "RedisState", "key_id", "mask_url",
           "redis_password", "check_redis_url", "state_store", "DEFAULTS"]

DEFAULTS = {"key_prefix": "vandamme:", "timeout": 0.25, "reconnect_max": 5.0}
RECONNECT_MIN = 0.1  # seconds before the first reconnection attempt; doubles up to reconnect_max
HEALTH_INTERVAL = 5.0  # an idle subscription pings Redis this often (a dead peer is found out)
WRITE_BACK_CHUNK = 500  # signatures per pipeline when writing back after an outage


def key_id(key: str) -> str:
    """How a key is named in Redis: 16 hex digits of its SHA-256, never the key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def redis_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_url(url: str) -> str:
    """``redis://user:secret@host:6379/0`` -> ``redis://user:****@host:6379/0``."""
    try:
        parts = urlsplit(url)
        if parts.password is None and "@" not in parts.netloc:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{user}:****@{host}" if parts.password is not None else f"{user}@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "(redis url hidden)"


def check_redis_url(url: str) -> str | None:
    """Why ``url`` cannot be used (without showing it), or None."""
    try:
        from redis.asyncio.connection import parse_url
    except ImportError:  # pragma: no cover - redis is a dependency
        return "the 'redis' package is not installed (pip install 'redis>=5')"
    try:
        parse_url(url)
    except Exception as exc:  # noqa: BLE001 - redis-py raises ValueError or TypeError
        return f"not a Redis URL ({type(exc).__name__}); expected redis://[user:password@]host[:port][/db], " \
               "rediss://... or unix:///path"
    return None


class _Reconnect(Exception):
    """The listener starts over because a call elsewhere failed (and was counted there)."""


class StateStatus:
    """What the metrics show of the state store: ``backend`` ("memory" or "redis"), ``up`` (the
    backend is in use; false while Redis is unreachable), ``errors_total`` (failed Redis calls) and
    ``outages_total`` (times the store went down)."""

    __slots__ = ("backend", "up", "errors_total", "outages_total")

    def __init__(self, backend: str, up: bool):
        self.backend = backend
        self.up = up
        self.errors_total = 0
        self.outages_total = 0

    def as_dict(self) -> dict:
        return {"backend": self.backend, "up": self.up, "errors_total": self.errors_total,
                "outages_total": self.outages_total}


class StateStore(Protocol):
    shared: bool  # False: rings and caches are given no store (nothing to call on any path)
    status: StateStatus

    def attach_ring(self, provider: str, ring: Any) -> None: ...
    def attach_signatures(self, cache: Any) -> None: ...
    def cooldown(self, provider: str, key: str, seconds: float) -> None: ...
    def put_signature(self, tool_call_id: str, signature: str, ttl: float) -> None: ...
    async def get_signatures(self, ids: list[str]) -> dict[str, str] | None: ...
    async def start(self) -> None: ...
    async def close(self) -> None: ...


class LocalState:
    """In-process state: rings and caches keep everything themselves."""

    shared = False

    def __init__(self) -> None:
        self.status = StateStatus("memory", True)

    def attach_ring(self, provider: str, ring: Any) -> None:
        pass

    def attach_signatures(self, cache: Any) -> None:
        pass

    def cooldown(self, provider: str, key: str, seconds: float) -> None:
        pass

    def put_signature(self, tool_call_id: str, signature: str, ttl: float) -> None:
        pass

    async def get_signatures(self, ids: list[str]) -> dict[str, str] | None:
        return None

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def describe(self) -> str:
        return "in-process"


class RedisState:
    """Key cooldowns and thought signatures in Redis, mirrored locally (see the module docstring).
    Built at compile time (no connection); ``start``/``close`` follow the Gateway's."""

    shared = True

    def __init__(self, url: str, key_prefix: str = DEFAULTS["key_prefix"], timeout: float = DEFAULTS["timeout"],
                 reconnect_max: float = DEFAULTS["reconnect_max"]):
        self.url = url
        self.shown_url = mask_url(url)
        self.prefix = key_prefix
        self.channel = f"{key_prefix}events"
        self.timeout = float(timeout)
        self.reconnect_max = max(float(reconnect_max), RECONNECT_MIN)
        self.status = StateStatus("redis", False)
        self._rings: dict[tuple[str, str], list[tuple[Any, int]]] = {}
        self._ring_list: list[tuple[str, Any]] = []
        self._caches: list[Any] = []
        self._origin = os.urandom(6).hex().encode()
        self._client = None
        self._task: asyncio.Task | None = None
        self._pending: set[asyncio.Task] = set()
        self._first_attempt: asyncio.Event | None = None
        self._broken = False  # a command failed: the listener reconnects
        self._warned = False  # one warning per outage
        self._closing = False
        self._served = False  # the last session got as far as serving

    def describe(self) -> str:
        return f"Redis at {self.shown_url}"

    # ------------------------------------------------------------------ compile time
    def attach_ring(self, provider: str, ring: Any) -> None:
        self._ring_list.append((provider, ring))
        for index, key in enumerate(ring.keys):
            self._rings.setdefault((provider, key_id(key)), []).append((ring, index))

    def attach_signatures(self, cache: Any) -> None:
        self._caches.append(cache)

    # ------------------------------------------------------------------ request path (never awaits Redis for a write)
    def cooldown(self, provider: str, key: str, seconds: float) -> None:
        ms = int(seconds * 1000)
        if ms > 0 and self.status.up:
            self._spawn(self._write_cooldowns([(provider, key_id(key), ms)]))

    def put_signature(self, tool_call_id: str, signature: str, ttl: float) -> None:
        if self.status.up:
            self._spawn(self._write_signatures([(tool_call_id, signature, int(ttl * 1000))]))

    async def get_signatures(self, ids: list[str]) -> dict[str, str] | None:
        """The signatures Redis knows of ``ids`` (absent ones left out); None when Redis could not
        be asked (down, slow, failing): the caller then knows nothing more than before."""
        if not self.status.up or not ids:
            return None
        try:
            async with asyncio.timeout(self.timeout):
                values = await self._client.mget([f"{self.prefix}sig:{i}" for i in ids])
        except Exception as exc:  # noqa: BLE001 - any failure degrades, never fails the request
            self._failed(exc)
            return None
        return {i: v.decode() for i, v in zip(ids, values) if v is not None}

    def _spawn(self, coro) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a compile-time caller): nothing to share yet
            coro.close()
            return
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write_cooldowns(self, items: list[tuple[str, str, int]], bound: float | None = None) -> None:
        try:
            async with asyncio.timeout(bound or self.timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for provider, kid, ms in items:
                        pipe.set(f"{self.prefix}cool:{provider}:{kid}", b"1", px=ms)
                        pipe.publish(self.channel, orjson.dumps({"p": provider, "k": kid, "ms": ms,
                                                                 "o": self._origin.decode()}))
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    async def _write_signatures(self, items: list[tuple[str, str, int]], bound: float | None = None) -> None:
        try:
            async with asyncio.timeout(bound or self.timeout):
                async with self._client.pipeline(transaction=False) as pipe:
                    for tool_call_id, signature, ms in items:
                        if ms > 0:
                            pipe.set(f"{self.prefix}sig:{tool_call_id}", signature, px=ms)
                    await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed(exc)

    def _failed(self, exc: BaseException) -> None:
        """A Redis call failed: count it, stop using Redis (the listener reconnects), and warn once
        per outage."""
        self.status.errors_total += 1
        self.status.up = False
        self._broken = True
        if self._closing:
            return
        if not self._warned:
            self._warned = True
            self.status.outages_total += 1
            detail = str(exc) or (f"no answer within {self.timeout:g} s" if isinstance(exc, TimeoutError)
                                  else "no detail")
            logger.warning("shared state: {} unreachable ({}: {}); key cooldowns and thought signatures "
                           "are kept in-process until it is back", self.shown_url, type(exc).__name__, detail)
        else:
            logger.debug("shared state: {} still unreachable ({}: {})", self.shown_url, type(exc).__name__, exc)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Open the client and start the background task; wait (bounded) for its first attempt, so
        that a reachable Redis is in use, and its cooldowns known, before the first request."""
        if self._task is not None:
            return
        self._closing = False
        try:
            import redis.asyncio as aioredis
            from redis.asyncio.retry import Retry
            from redis.backoff import NoBackoff

            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=max(self.timeout, 1.0),
                # one immediate retry: a pooled connection that died in an outage fails at once on
                # first use; every call stays bounded by asyncio.timeout(state.timeout) anyway
                retry=Retry(NoBackoff(), 1), health_check_interval=0, client_name="vandamme")
        except Exception as exc:  # noqa: BLE001 - a bad URL is caught by validation; this is a guard
            self._warned = True
            logger.error("shared state: cannot use {} ({}); state stays in-process", self.shown_url,
                         type(exc).__name__)
            return
        self._first_attempt = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="vandamme-shared-state")
        try:
            async with asyncio.timeout(max(self.timeout, 1.0) * 3):
                await self._first_attempt.wait()
        except TimeoutError:
            pass

    async def close(self) -> None:
        self._closing = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task], timeout=2.0)
        if self._pending:  # writes in flight are bounded by the timeout
            await asyncio.wait(list(self._pending), timeout=self.timeout * 2)
        client, self._client = self._client, None
        self.status.up = False
        if client is not None:
            try:
                async with asyncio.timeout(1.0):
                    await client.aclose()
            except Exception:  # noqa: BLE001
                pass

    async def _run(self) -> None:
        delay = RECONNECT_MIN
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except _Reconnect:  # another call failed and was counted already
                pass
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
            if self._first_attempt is not None:
                self._first_attempt.set()
            if self._served:  # it was up: the first attempt after a loss comes quickly
                delay, self._served = RECONNECT_MIN, False
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.reconnect_max)

    async def _session(self) -> None:
        """One connection's life: subscribe, catch up, write back, then mirror what is published
        until something fails."""
        client = self._client
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            bound = max(self.timeout, 1.0) * 4
            async with asyncio.timeout(bound):
                await pubsub.subscribe(self.channel)
                await self._catch_up(client)
            self._broken = False
            await self._write_back(bound)
            if self._broken:
                raise _Reconnect()
            was_warned = self._warned
            self.status.up = True
            self._warned = False
            self._served = True
            if was_warned:
                logger.info("shared state: {} recovered; key cooldowns and thought signatures are shared "
                            "again", self.shown_url)
            else:
                logger.info("shared state: using {}", self.shown_url)
            if self._first_attempt is not None:
                self._first_attempt.set()
            next_ping = time.monotonic() + HEALTH_INTERVAL
            while not self._broken:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                if message is not None and message.get("type") == "message":
                    self._on_message(message.get("data"))
                if time.monotonic() >= next_ping:
                    async with asyncio.timeout(max(self.timeout, 1.0)):
                        await client.ping()
                    next_ping = time.monotonic() + HEALTH_INTERVAL
            raise _Reconnect()
        finally:
            try:
                async with asyncio.timeout(1.0):
                    await pubsub.aclose()
            except Exception:  # noqa: BLE001 - the connection is gone already
                pass

    async def _catch_up(self, client) -> None:
        """Mirror the cooldowns that are live in Redis now (those set while we were away)."""
        names = [name async for name in client.scan_iter(match=f"{self.prefix}cool:*", count=500)]
        if not names:
            return
        async with client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.pttl(name)
            ttls = await pipe.execute()
        cut = len(self.prefix) + len("cool:")
        for name, ms in zip(names, ttls):
            if isinstance(ms, int) and ms > 0:
                provider, _, kid = name[cut:].decode(errors="replace").rpartition(":")
                self._mirror(provider, kid, ms)

    async def _write_back(self, bound: float) -> None:
        """After an outage: what this process learnt meanwhile goes to Redis. Its live cooldowns
        that Redis does not have (``SET NX``: one set by another replica is left as it is) are
        written and published; its live signatures are written with their remaining TTL."""
        now = time.monotonic()
        cooldowns = []
        for provider, ring in self._ring_list:
            for index, until in list(ring.live_cooldowns(now)):
                ms = int((until - now) * 1000)
                if ms > 0:
                    cooldowns.append((provider, key_id(ring.keys[index]), ms))
        if cooldowns:
            try:
                async with asyncio.timeout(bound):
                    async with self._client.pipeline(transaction=False) as pipe:
                        for provider, kid, ms in cooldowns:
                            pipe.set(f"{self.prefix}cool:{provider}:{kid}", b"1", px=ms, nx=True)
                        written = await pipe.execute()
                    async with self._client.pipeline(transaction=False) as pipe:
                        for (provider, kid, ms), done in zip(cooldowns, written):
                            if done:
                                pipe.publish(self.channel, orjson.dumps({"p": provider, "k": kid, "ms": ms,
                                                                         "o": self._origin.decode()}))
                        await pipe.execute()
            except Exception as exc:  # noqa: BLE001
                self._failed(exc)
                return
        for cache in self._caches:
            items = list(cache.live_items(now))
            for i in range(0, len(items), WRITE_BACK_CHUNK):
                if self._broken:
                    return
                await self._write_signatures(items[i:i + WRITE_BACK_CHUNK], bound)

    def _on_message(self, data: Any) -> None:
        try:
            event = orjson.loads(data)
            if event.get("o") == self._origin.decode():
                return
            self._mirror(str(event["p"]), str(event["k"]), int(event["ms"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            logger.debug("shared state: ignored a malformed message on {}", self.channel)

    def _mirror(self, provider: str, kid: str, ms: int) -> None:
        rings = self._rings.get((provider, kid), ())
        for ring, index in rings:
            ring.mirror(index, ms / 1000.0)
        if rings:
            logger.debug("shared state: key {} of provider {} cooling down for {:.1f} s (from the shared store)",
                         kid, provider, ms / 1000.0)


def state_store(spec: dict | None) -> LocalState | RedisState:
    """The store a spec's ``state:`` block asks for: Redis with ``redis_url``, else in-process."""
    spec = spec or {}
    url = spec.get("redis_url")
    if not url:
        return LocalState()
    return RedisState(url, key_prefix=spec.get("key_prefix", DEFAULTS["key_prefix"]),
                      timeout=float(spec.get("timeout", DEFAULTS["timeout"])),
                      reconnect_max=float(spec.get("reconnect_max", DEFAULTS["reconnect_max"])))

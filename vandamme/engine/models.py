"""GET /v1/models: every active provider's models, plus the aliases, in Anthropic's list format.

Each provider's list comes from its upstream (`/models` for OpenAI format, `/openai/models` for
Azure OpenAI, `/v1/models` for Anthropic format) when reachable, cached for ``server.models_cache_ttl`` seconds; when the upstream
cannot be asked (no key for a passthrough provider, an error, a timeout) the spec's ``models`` list
stands in. Ids are ``provider:model`` so that any listed id can be sent back as a model name.
"""
from __future__ import annotations

import asyncio
import time

import aiohttp
import orjson
from loguru import logger

from vandamme.transforms.headers import set_auth
from vandamme.transforms.keys import client_key

EPOCH = "1970-01-01T00:00:00Z"
_FETCH_TIMEOUT = aiohttp.ClientTimeout(total=5)


def _iso(created) -> str:
    if isinstance(created, (int, float)) and created > 0:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    if isinstance(created, str) and created:
        return created
    return EPOCH


def models_path(provider) -> str:
    """Where a provider's upstream lists its models: ``/v1/models`` in Anthropic format,
    ``/openai/models`` for Azure OpenAI (``api_style: azure``; the provider's query carries its
    ``api-version``), ``/models`` for other OpenAI-format APIs (their base URL ends in ``/v1``)."""
    if provider.format == "anthropic":
        return "/v1/models"
    if provider.spec.get("api_style") == "azure":
        return "/openai/models"
    return "/models"


class ModelCatalog:
    def __init__(self, gateway):
        self.gateway = gateway
        self.ttl = gateway.settings.models_cache_ttl
        self._cache: dict[str, tuple[float, list[dict]]] = {}

    async def _fetch(self, provider, headers_in) -> list[dict] | None:
        if provider.session is None:
            return None
        key = client_key(headers_in) if provider.passthrough else None
        if not provider.passthrough and provider.key_count:
            key = [k for k in provider.spec.get("api_keys", []) if k != "!PASSTHRU"][0]
        headers: dict[str, str] = {}
        if provider.format == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
        set_auth(headers, provider.auth, key)
        try:
            async with provider.session.get(provider.base_url + models_path(provider), headers=headers,
                                            params=provider.query or None, timeout=_FETCH_TIMEOUT) as r:
                if r.status != 200:
                    return None
                data = orjson.loads(await r.read())
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError):
            return None
        out = []
        for m in data.get("data") or []:
            if isinstance(m, dict) and isinstance(m.get("id"), str):
                out.append({"id": m["id"], "created": m.get("created", m.get("created_at")),
                            "display_name": m.get("display_name") or m["id"]})
        return out

    async def provider_models(self, provider, headers_in) -> list[dict]:
        cached = self._cache.get(provider.name)
        now = time.monotonic()
        if cached and cached[0] > now:
            return cached[1]
        models = await self._fetch(provider, headers_in)
        if models is None:
            models = [{"id": m, "created": None, "display_name": m} for m in provider.spec.get("models") or []]
            ttl = min(self.ttl, 30.0)  # ask again soon: the upstream may be back
        else:
            ttl = self.ttl
        if not provider.passthrough:  # a client's key must never fill a shared cache
            self._cache[provider.name] = (now + ttl, models)
        return models

    async def listing(self, headers_in) -> bytes:
        providers = [p for p in self.gateway.providers.values() if p.active]
        lists = await asyncio.gather(*(self.provider_models(p, headers_in) for p in providers))
        data = []
        for p, models in zip(providers, lists):
            for m in models:
                data.append({"type": "model", "id": f"{p.name}:{m['id']}",
                             "display_name": f"{m['display_name']} ({p.name})", "created_at": _iso(m["created"])})
        index = self.gateway.alias_index
        for name in dict.fromkeys(a["name"] for a in index.entries()):
            target = index.resolve(name)
            data.append({"type": "model", "id": name,
                         "display_name": f"{name} → {target.provider}:{target.model}", "created_at": EPOCH})
        logger.debug("models listing: {} entries", len(data))
        return orjson.dumps({"data": data, "has_more": False,
                             "first_id": data[0]["id"] if data else None,
                             "last_id": data[-1]["id"] if data else None})

"""`vandamme models [PROVIDER]`: the models the gateway would list for each active provider.

It asks the upstreams the way the gateway's ``GET /v1/models`` does (vandamme.engine.models.ModelCatalog:
OpenAI format ``{base_url}/models`` (Azure OpenAI ``{base_url}/openai/models``), Anthropic format
``{base_url}/v1/models``, the provider's first key, 5 s), and falls back, as the gateway does, to the spec's ``models`` list when the
upstream cannot be asked (no client key for a !PASSTHRU provider, an error, a timeout). The
``source`` column says which one a row came from. Ids are ``provider:model``: what a client sends.
"""
from __future__ import annotations

import asyncio
import sys

from .cli_output import Progress, emit_json, table


async def _list(gw, providers, progress: Progress) -> list[dict]:
    from .models import ModelCatalog, _iso

    catalog = ModelCatalog(gw)
    await gw.start()  # each active provider's pooled session, as the server opens them
    done = 0
    try:
        async def one(p):
            nonlocal done
            fetched = await catalog._fetch(p, {})
            done += 1
            progress.update(f"{done}/{len(providers)} answered")
            return fetched

        lists = await asyncio.gather(*(one(p) for p in providers))
    finally:
        await gw.close()
    rows = []
    for p, fetched in zip(providers, lists):
        if fetched is None:
            source = "spec"
            note = ("its upstream lists models only with a client's key (!PASSTHRU)" if p.passthrough
                    else "its upstream model list could not be read")
            fetched = [{"id": m, "created": None, "display_name": m} for m in p.spec.get("models") or []]
        else:
            source, note = "upstream", None
        if not fetched:
            rows.append({"provider": p.name, "id": None, "model": None, "display_name": None,
                         "created_at": None, "source": source, "note": note})
        for m in fetched:
            rows.append({"provider": p.name, "id": f"{p.name}:{m['id']}", "model": m["id"],
                         "display_name": m["display_name"], "created_at": _iso(m["created"]) if m["created"] else None,
                         "source": source, "note": note})
    return rows


def models(gw, provider: str | None, as_json: bool) -> int:
    providers = [p for p in gw.providers.values() if p.active]
    if provider is not None:
        p = gw.providers.get(provider)
        if p is None:
            print(f"vandamme models: no provider '{provider}' (providers: {', '.join(gw.providers) or 'none'})",
                  file=sys.stderr)
            return 1
        if not p.active:
            print(f"vandamme models: provider '{provider}' is inactive: {p.inactive_reason}",
                  file=sys.stderr)
            return 1
        providers = [p]
    with Progress(f"asking {len(providers)} provider{'s' if len(providers) != 1 else ''} for models") as progress:
        rows = asyncio.run(_list(gw, providers, progress)) if providers else []
    listed = [r for r in rows if r["id"] is not None]
    if as_json:
        sources = {}
        for r in rows:
            sources.setdefault(r["provider"], {"source": r["source"], "note": r["note"], "models": 0})
            sources[r["provider"]]["models"] += r["id"] is not None
        emit_json({"data": [{k: v for k, v in r.items() if k != "note"} for r in listed], "providers": sources})
        return 0
    if not providers:
        print("no active provider: set a provider's key (e.g. OPENAI_API_KEY) or its base URL")
        return 0
    if listed:
        table([[r["provider"], r["id"], r["display_name"] if r["display_name"] != r["model"] else "", r["source"]]
               for r in listed], ["PROVIDER", "MODEL", "NAME", "SOURCE"])
    notes = {r["provider"]: r["note"] for r in rows if r["note"]}
    for name, note in notes.items():
        empty = any(r["id"] is None for r in rows if r["provider"] == name)
        print(f"{name}: {note}; " + ("the spec lists no models either" if empty else "the spec's models: list shown"))
    return 0

"""``vandamme explain MODEL``: how a model would be resolved, step by step, without sending anything.

``explain`` returns text for humans, ``explain_json`` the same as a dict (``--format json``).
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

from transforms.aliases import AliasIndex, Resolution
from transforms.routing import RequestFeatures, Router

from vandamme.sources import SourceMap


def _key_env(pdata: Mapping[str, Any], name: str) -> str:
    for k in ("api_key_env", "key_env"):
        v = pdata.get(k)
        if isinstance(v, str) and v:
            return v
    return name.upper().replace("-", "_") + "_API_KEY"


def explain_json(data: Mapping[str, Any], sources: SourceMap | None, model: str,
                 headers: Mapping[str, str] | None = None, tokens: int | None = None,
                 active: Iterable[str] | None = None,
                 pipelines: Mapping[str, list[str]] | None = None,
                 body: Mapping[str, Any] | None = None) -> dict:
    """Resolve ``model`` as the gateway would. ``headers`` feed header/beta route conditions,
    ``tokens`` overrides the input-token estimate, ``body`` (optional) supplies thinking/tools."""
    sources = sources if sources is not None else SourceMap()
    providers: Mapping[str, Any] = data.get("providers") or {}
    active_set = set(providers) if active is None else set(active)
    index = AliasIndex.build(data, sources, active_set, cache_size=0)
    router = Router.build(data, sources, index)
    req = dict(body or {})
    req["model"] = model
    features = RequestFeatures.from_body(req, dict(headers or {}), tokens=tokens)

    rules = router.explain(features)
    hit = router.match(features)
    out: dict[str, Any] = {
        "model": model,
        "features": {
            "thinking": features.thinking, "tools": features.tools, "tool_count": features.tool_count,
            "beta": features.beta or None,
            "input_tokens": features.input_tokens if (tokens is not None or router.uses_tokens) else None,
            "headers": dict(headers or {}),
        },
        "routes": [r.as_dict() for r in rules],
        "route": None,
    }
    if hit is not None:
        res: Resolution = hit.resolution
        out["route"] = {"index": hit.index, "name": hit.name, "source": hit.route.source,
                        "to": hit.route.to}
        pairs = list(hit.targets)
    else:
        res = index.resolve(model)
        pairs = [(res.provider, res.model)]
    out["resolution"] = {
        "kind": "route" if hit is not None else res.kind,
        "steps": [s.as_dict() for s in res.steps],
        "candidates": [c.as_dict() for c in res.candidates],
        "skipped": [c.as_dict() for c in res.skipped],
    }

    targets = []
    for pname, m in pairs:
        pdata = providers.get(pname)
        t = {"provider": pname, "model": m, "defined": pdata is not None,
             "active": pname in active_set and pdata is not None,
             "format": (pdata or {}).get("format"), "base_url": (pdata or {}).get("base_url")}
        if pdata is None:
            t["error"] = f"provider '{pname}' is not defined in the specs"
        elif pname not in active_set:
            if pdata.get("enabled") is False:
                t["error"] = f"provider '{pname}' is not configured: disabled in the spec (enabled: false)"
            else:
                t["error"] = f"provider '{pname}' is not configured: set {_key_env(pdata, pname)}"
        targets.append(t)
    out["targets"] = targets
    usable = [t for t in targets if t["active"]]
    final = usable[0] if usable else targets[0]
    out["final"] = {k: final.get(k) for k in ("provider", "model", "format", "base_url")}
    out["error"] = None if usable else targets[0].get("error")
    if pipelines is not None:
        chosen = {name: list(stages) for name, stages in pipelines.items()
                  if name in ("front", final["provider"])}
        out["pipelines"] = chosen or {name: list(stages) for name, stages in pipelines.items()}
    return out


def explain(data: Mapping[str, Any], sources: SourceMap | None, model: str,
            headers: Mapping[str, str] | None = None, tokens: int | None = None,
            active: Iterable[str] | None = None,
            pipelines: Mapping[str, list[str]] | None = None,
            body: Mapping[str, Any] | None = None) -> str:
    j = explain_json(data, sources, model, headers, tokens, active, pipelines, body)
    lines = [f"model: {model}"]
    f = j["features"]
    feats = [f"thinking={str(f['thinking']).lower()}", f"tools={f['tool_count']}"]
    if f["input_tokens"] is not None:
        feats.append(f"input_tokens={f['input_tokens']}" + (" (given)" if tokens is not None else ""))
    if f["beta"]:
        feats.append(f"anthropic-beta={f['beta']}")
    for k, v in (f["headers"] or {}).items():
        if str(k).lower() != "anthropic-beta":
            feats.append(f"{k}={v}")
    lines.append("features: " + ", ".join(feats))

    if j["routes"]:
        lines.append("routes (first match wins):")
        decided = False
        for r in j["routes"]:
            if decided:
                state = "not tried (an earlier route matched)"
            elif r["matched"]:
                state = f"MATCHED -> {r['target']}"
                decided = True
            else:
                state = f"no: {r['failed']}"
            lines.append(f"  [{r['index']}] {r['name']} ({r['source']}): {state}")
    else:
        lines.append("routes: none declared")

    res = j["resolution"]
    if j["route"] is not None:
        rt = j["route"]
        lines.append(f"route '{rt['name']}' ({rt['source']}) sends it to '{rt['to']}':")
    else:
        lines.append("alias resolution:")
    for i, s in enumerate(res["steps"], 1):
        alias = f" '{s['alias']}'" if s["alias"] else ""
        lines.append(f"  {i}. {s['kind']}{alias}: {s['why']} -> {s['target']}  [{s['source']}]")
    if res["candidates"]:
        lines.append("  other candidates:")
        for c in res["candidates"]:
            lines.append(f"    - '{c['alias']}' ({c['scope']}) -> {c['target']}: {c['reason']}  [{c['source']}]")
    if res["skipped"]:
        lines.append("  skipped:")
        for c in res["skipped"]:
            lines.append(f"    - '{c['alias']}' ({c['scope']}) -> {c['target']}: {c['reason']}  [{c['source']}]")

    fin = j["final"]
    lines.append("result:")
    lines.append(f"  provider: {fin['provider']}")
    lines.append(f"  model:    {fin['model']}")
    lines.append(f"  format:   {fin['format']}")
    lines.append(f"  base_url: {fin['base_url']}")
    if len(j["targets"]) > 1:
        lines.append("  targets (primary then fallbacks):")
        for t in j["targets"]:
            note = f"  ({t['error']}; skipped)" if t.get("error") else ""
            lines.append(f"    - {t['provider']}:{t['model']}{note}")
    if j["error"]:
        lines.append(f"  error: a request would fail with 400: {j['error']}")
    for name, stages in (j.get("pipelines") or {}).items():
        lines.append(f"  pipeline {name}: {' -> '.join(stages)}")
    return "\n".join(lines) + "\n"


"""``vandamme explain MODEL``: how a model would be resolved, step by step, without sending anything.

The decision is the runtime's own: :meth:`ResolveTarget.resolve
<vandamme.transforms.resolve_stage.ResolveTarget.resolve>`, called on the compiled gateway's own
``resolve_target`` stage (``--live``), or on one built over the same compiled providers in which
every provider the spec enables counts as configured (as declared, the default). This module only
finds that stage and shows its answer: ``explain_json`` as a dict (``--format json``), ``render``
and ``explain`` as text.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from vandamme.transforms.resolve_stage import ResolveTarget
from vandamme.transforms.routing import RequestFeatures


# --------------------------------------------------------------------------- the resolver
def live_resolver(gateway: Any) -> ResolveTarget:
    """The compiled gateway's own ``resolve_target`` stage (its front pipeline's)."""
    for stage in gateway.front.stages:
        if isinstance(stage, ResolveTarget):
            return stage
    raise LookupError("the gateway's front pipeline has no resolve_target stage")


def declared_resolver(gateway: Any) -> ResolveTarget:
    """A ``resolve_target`` stage for the gateway's spec and compiled providers in which every
    provider counts as configured: the routing the specs describe, whatever keys are set here.
    A provider the spec itself switches off (``enabled: false``) stays off."""
    spec = gateway.spec
    enabled = {name for name, p in gateway.providers.items() if p.spec.get("enabled", True) is not False}
    return ResolveTarget.build(spec.data, spec.sources, gateway.providers, active=enabled)


def resolver_for(gateway: Any, live: bool) -> ResolveTarget:
    return live_resolver(gateway) if live else declared_resolver(gateway)


def request_features(model: str, headers: Mapping[str, str] | None = None, tokens: int | None = None,
                     body: Mapping[str, Any] | None = None) -> RequestFeatures:
    """The features of a request for ``model`` with ``headers`` and ``body`` (which supplies
    thinking and tools); ``tokens`` replaces the input-token estimate."""
    req = dict(body or {})
    req["model"] = model
    return RequestFeatures.from_body(req, dict(headers or {}), tokens=tokens)


# --------------------------------------------------------------------------- explain
def explain_json(resolver: ResolveTarget, model: str, headers: Mapping[str, str] | None = None,
                 tokens: int | None = None, pipelines: Mapping[str, list[str]] | None = None,
                 body: Mapping[str, Any] | None = None,
                 pipeline_for: Callable[[str, Any], Any] | None = None) -> dict:
    """What ``resolver`` decides for ``model``, with the routes tried and the alias steps.

    ``headers`` feed header/beta route conditions, ``tokens`` overrides the input-token estimate,
    ``body`` (optional) supplies thinking/tools. ``pipelines`` (stage names by pipeline, as
    ``Gateway.pipelines()``) and ``pipeline_for`` (``Gateway.pipeline_for``) add the pipelines and
    the declared middleware the request would run."""
    features = request_features(model, headers, tokens, body)
    decided = resolver.resolve(model, features)
    router = resolver.router
    uses_tokens = router is not None and router.uses_tokens
    out: dict[str, Any] = {
        "model": model,
        "features": {
            "thinking": features.thinking, "tools": features.tools, "tool_count": features.tool_count,
            "beta": features.beta or None,
            "input_tokens": features.input_tokens if (tokens is not None or uses_tokens) else None,
            "headers": dict(headers or {}),
        },
        "routes": [r.as_dict() for r in router.explain(features)] if router is not None else [],
        "route": None,
    }
    route = decided.route
    if route is not None:
        out["route"] = {"index": route.index, "name": route.name, "source": route.source, "to": route.to}
    res = decided.resolution
    out["resolution"] = {
        "kind": "route" if route is not None else res.kind,
        "steps": [s.as_dict() for s in res.steps],
        "candidates": [c.as_dict() for c in res.candidates],
        "skipped": [c.as_dict() for c in res.skipped],
    }

    targets = []
    for pname, m in decided.declared:
        p = resolver.providers.get(pname)
        unusable = resolver.why_unusable(pname)
        t = {"provider": pname, "model": m, "defined": p is not None, "active": unusable is None,
             "format": getattr(p, "format", None), "base_url": getattr(p, "base_url", None)}
        if unusable is not None:
            t["error"] = unusable[1]
        targets.append(t)
    out["targets"] = targets
    if decided.targets:
        provider, final_model = decided.targets[0]
        final = next(t for t in targets if t["provider"] == provider.name and t["model"] == final_model)
    else:
        final = targets[0]
    out["final"] = {k: final.get(k) for k in ("provider", "model", "format", "base_url")}
    out["error"] = decided.error
    out["status"] = decided.status

    pipeline = None
    if pipeline_for is not None and decided.targets:
        pipeline = pipeline_for(final["provider"], route)
    out["middleware"] = list(pipeline.middleware) if pipeline is not None else None
    if pipelines is not None:
        chosen = {name: list(stages) for name, stages in pipelines.items()
                  if name in ("front", final["provider"])}
        if pipeline is not None:
            chosen[final["provider"]] = list(pipeline.stage_names)  # the route's variant, if any
        out["pipelines"] = chosen or {name: list(stages) for name, stages in pipelines.items()}
    return out


def explain(resolver: ResolveTarget, model: str, headers: Mapping[str, str] | None = None,
            tokens: int | None = None, pipelines: Mapping[str, list[str]] | None = None,
            body: Mapping[str, Any] | None = None,
            pipeline_for: Callable[[str, Any], Any] | None = None) -> str:
    """``explain_json`` as text."""
    return render(explain_json(resolver, model, headers, tokens, pipelines, body, pipeline_for),
                  tokens_given=tokens is not None)


def render(j: Mapping[str, Any], tokens_given: bool = False) -> str:
    """The text form of an ``explain_json`` result."""
    lines = [f"model: {j['model']}"]
    f = j["features"]
    feats = [f"thinking={str(f['thinking']).lower()}", f"tools={f['tool_count']}"]
    if f["input_tokens"] is not None:
        feats.append(f"input_tokens={f['input_tokens']}" + (" (given)" if tokens_given else ""))
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
        lines.append(f"  error: a request would fail with {j['status']}: {j['error']}")
    if j.get("middleware") is not None:
        lines.append(f"  middleware: {' -> '.join(j['middleware']) if j['middleware'] else 'none'}")
    for name, stages in (j.get("pipelines") or {}).items():
        lines.append(f"  pipeline {name}: {' -> '.join(stages)}")
    return "\n".join(lines) + "\n"

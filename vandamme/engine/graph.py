"""`vandamme graph`: the compiled pipelines as text, JSON or Graphviz DOT.

Every stage is shown in its run order with where it came from: the spec position that declared
it (``file:line:col``), the environment variable (``env:VAR``), or ``built in``.
"""
from __future__ import annotations

from .compiler import Gateway
from .pipeline import Pipeline


def _label(node) -> str:
    return f"{node.name}[{node.detail}]" if node.detail else node.name


def _pipelines(gw: Gateway):
    """(provider, label, pipeline) for every provider pipeline, route variants included."""
    for p in gw.providers.values():
        if p.pipeline is None:
            continue
        yield p, "messages", p.pipeline
        for index, pipe in sorted(p.route_pipelines.items()):
            yield p, f"messages via route [{index}]", pipe
        yield p, "count_tokens", p.count_pipeline


def _chain(pipe: Pipeline) -> str:
    """Stages in run order; a declared one shows where it was declared, one on the way out is
    marked ``(out)``."""
    parts = []
    for n in pipe.nodes:
        notes = [n.origin] if n.origin != "built in" else []
        if n.side == "response" and n.origin != "built in":
            notes.append("out")
        parts.append(_label(n) + (f" ({', '.join(notes)})" if notes else ""))
    return " -> ".join(parts)


def graph_text(gw: Gateway) -> str:
    lines = ["front (every request):", "  " + _chain(gw.front)]
    routes = gw.router.routes
    if routes:
        lines.append("routes (first match wins):")
        for r in routes:
            fb = ", ".join(f"{t.provider}:{t.model}" for _, t in r.fallbacks)
            lines.append(f"  [{r.index}] {r.name}: -> {r.target.provider}:{r.target.model}"
                         + (f", fallbacks: {fb}" if fb else ""))
    for p, label, pipe in _pipelines(gw):
        if label == "messages":
            state = "active" if p.active else f"inactive: {p.inactive_reason}"
            lines.append(f"provider {p.name} (format {p.format}, {p.base_url}, {state})")
        lines.append(f"  {label + ':':13} {_chain(pipe)}")
    return "\n".join(lines) + "\n"


def graph_json(gw: Gateway) -> dict:
    def pipe_json(pipe: Pipeline) -> dict:
        return {"name": pipe.name, "middleware": list(pipe.middleware),
                "stages": [n.as_dict() for n in pipe.nodes]}

    providers = {}
    for p, label, pipe in _pipelines(gw):
        entry = providers.setdefault(p.name, {
            "format": p.format, "base_url": p.base_url, "active": p.active,
            "inactive_reason": p.inactive_reason, "pipelines": {}})
        entry["pipelines"][label] = pipe_json(pipe)
    return {
        "front": pipe_json(gw.front),
        "routes": [{"index": r.index, "name": r.name, "to": f"{r.target.provider}:{r.target.model}",
                    "fallbacks": [f"{t.provider}:{t.model}" for _, t in r.fallbacks],
                    "source": r.source} for r in gw.router.routes],
        "providers": providers,
    }


def _q(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def graph_dot(gw: Gateway) -> str:
    out = ["digraph vandamme {", "  rankdir=LR;", "  node [shape=box, fontname=\"Helvetica\"];"]
    front = gw.front.stage_names
    for a, b in zip(front, front[1:]):
        out.append(f"  {_q('front.' + a)} -> {_q('front.' + b)};")
    for name in front:
        out.append(f"  {_q('front.' + name)} [label={_q(name)}];")
    last = "front." + front[-1]
    for n, (p, label, pipe) in enumerate(_pipelines(gw)):
        if not pipe.nodes:
            continue
        style = "" if p.active else ", style=dashed"
        ids = [f"{p.name}.{n}.{i}.{node.name}" for i, node in enumerate(pipe.nodes)]
        out.append(f"  subgraph {_q(f'cluster_{p.name}_{n}')} {{")
        out.append(f"    label={_q(f'{p.name} ({p.format}) {label}')};{' style=dashed;' if not p.active else ''}")
        for i, node in zip(ids, pipe.nodes):
            tip = node.origin if node.origin != "built in" else ""
            shape = ", shape=ellipse" if node.side == "response" else ""
            out.append(f"    {_q(i)} [label={_q(node.name)}{shape}{style}"
                       + (f", tooltip={_q(tip)}" if tip else "") + "];")
        for a, b in zip(ids, ids[1:]):
            out.append(f"    {_q(a)} -> {_q(b)};")
        out.append("  }")
        out.append(f"  {_q(last)} -> {_q(ids[0])} [label={_q(p.name + ' ' + label)}];")
    out.append("}")
    return "\n".join(out) + "\n"

"""`vandamme graph`: the compiled pipelines as text or Graphviz DOT."""
from __future__ import annotations

from .compiler import Gateway


def _chain(pipeline) -> str:
    """Stage names in order; a stage with a ``detail`` shows it in brackets."""
    return " -> ".join(f"{s.name}[{s.detail}]" if getattr(s, "detail", None) else s.name
                       for s in pipeline.stages)


def graph_text(gw: Gateway) -> str:
    lines = ["front (every request):", f"  {_chain(gw.front)}"]
    routes = gw.router.routes
    if routes:
        lines.append("routes (first match wins):")
        for r in routes:
            fb = ", ".join(f"{t.provider}:{t.model}" for _, t in r.fallbacks)
            lines.append(f"  [{r.index}] {r.name}: -> {r.target.provider}:{r.target.model}"
                         + (f", fallbacks: {fb}" if fb else ""))
    for p in gw.providers.values():
        state = "active" if p.active else f"inactive: {p.inactive_reason}"
        lines.append(f"provider {p.name} (format {p.format}, {p.base_url}, {state})")
        lines.append(f"  messages:     {_chain(p.pipeline)}")
        lines.append(f"  count_tokens: {_chain(p.count_pipeline)}")
    return "\n".join(lines) + "\n"


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
    for p in gw.providers.values():
        style = "" if p.active else ", style=dashed"
        for kind, pipe in (("messages", p.pipeline), ("count_tokens", p.count_pipeline)):
            names = pipe.stage_names
            if not names:
                continue
            ids = [f"{p.name}.{kind}.{i}.{n}" for i, n in enumerate(names)]
            out.append(f"  subgraph {_q('cluster_' + p.name + '_' + kind)} {{")
            out.append(f"    label={_q(f'{p.name} ({p.format}) {kind}')};{' style=dashed;' if not p.active else ''}")
            for i, n in zip(ids, names):
                out.append(f"    {_q(i)} [label={_q(n)}{style}];")
            for a, b in zip(ids, ids[1:]):
                out.append(f"    {_q(a)} -> {_q(b)};")
            out.append("  }")
            out.append(f"  {_q(last)} -> {_q(ids[0])} [label={_q(p.name if kind == 'messages' else kind)}];")
    out.append("}")
    return "\n".join(out) + "\n"

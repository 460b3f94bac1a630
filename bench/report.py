"""Render bench/.work/results.json as Markdown and put it into docs/performance.md between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` (the rest of the document is left alone).

    python bench/report.py [results.json] [docs/performance.md]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ["direct", "nginx", "vdm", "litellm", "vandamme"]
SCEN = [
    ("conv_small", "Converted (Anthropic in → OpenAI upstream), non-stream, small body"),
    ("conv_large", "Converted, non-stream, Claude-Code-sized body"),
    ("conv_stream", "Converted, stream (Claude-Code-sized body → 200-chunk SSE)"),
    ("pass_large", "Anthropic passthrough, non-stream, Claude-Code-sized body"),
    ("pass_stream", "Anthropic passthrough, stream (200 text deltas)"),
]
CHUNKS = 200


def f(x, nd=1, unit=""):
    if x is None:
        return "–"
    if isinstance(x, float):
        if abs(x) >= 100:
            return f"{x:,.0f}{unit}"
        return f"{x:.{nd}f}{unit}"
    return f"{x}{unit}"


def tput(v):
    """Throughput of a scenario: the c64 median, unless fewer than two requests per connection
    completed at c64 (a server too slow for the run length), then the better of c1 and c64."""
    if v is None:
        return None
    if (v["c64"].get("requests") or 0) >= 2 * 64:
        return v["c64"]["rps"]
    return max(v["c1"]["rps"] or 0, v["c64"]["rps"] or 0)


def _tput_s(v):
    slow = (v["c64"].get("requests") or 0) < 2 * 64
    return f(tput(v)) + (" ²" if slow else "")


def ratio(a, b):
    if a is None or b is None or not b:
        return None
    return a / b


def _sc(res, sysk, sck):
    s = res["systems"].get(sysk) or {}
    v = (s.get("scenarios") or {}).get(sck) or {}
    return v if v.get("status") == "ok" else None


def _systems(res):
    return [k for k in ORDER if k in res["systems"]]


def render(res: dict) -> str:
    m = res["meta"]
    out = []
    out.append(f"Last run: {m.get('date')} · {m.get('nproc')} CPUs ({m.get('cpu')}) · kernel {m.get('kernel')} · "
               f"Python {m.get('python')} · {m.get('nginx') or 'nginx ?'} · {m.get('wrk') or 'wrk ?'} · "
               f"gateway on core 0, upstream + load on core 1 · "
               f"wrk runs of {m.get('duration_s'):g} s × {m.get('repeat')} (medians) · "
               f"total {m.get('elapsed_s', '?')} s{' · INTERRUPTED' if m.get('interrupted') else ''}.")
    b = m.get("bodies") or {}
    if b:
        out.append(f"Bodies: small {b.get('small_converted')} B, large {b.get('large_converted')} B.")
    out.append("")
    labels = {k: res["systems"][k]["label"] for k in _systems(res)}

    for sck, title in SCEN:
        stream = "stream" in sck
        out.append(f"#### {title}")
        out.append("")
        if stream:
            out.append("| system | streams/s c64 | CPU ms/stream | CPU µs/chunk | p50 / p99 ms c1 | p99 ms c64 "
                       "| first byte / first text / whole stream ms c1 | errors |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        else:
            out.append("| system | req/s c64 | CPU ms/req | p50 / p99 ms c1 | p99 ms c64 | req/s c1 | errors |")
            out.append("|---|---:|---:|---:|---:|---:|---:|")
        for k in _systems(res):
            s = res["systems"][k]
            v = (s.get("scenarios") or {}).get(sck)
            if not v or v.get("status") != "ok":
                st = (v or {}).get("status") or s.get("status") or "not run"
                st = st.replace("|", "/").replace("\n", " ")[:90]
                cols = 7 if stream else 6
                out.append(f"| {labels[k]} | {st} |" + " |" * (cols - 1))
                continue
            cpu = v.get("cpu_ms_per_req")
            cpu_s = f(cpu, 3) + (" ¹" if v.get("cpu_from") == "c1" else "")
            errs = (v["c1"]["errors"] or 0) + (v["c64"]["errors"] or 0)
            if v["c1"].get("excluded_runs") or v["c64"].get("excluded_runs"):
                errs = f"{errs} ³"
            lat = f"{f(v['c1']['p50_ms'], 2)} / {f(v['c1']['p99_ms'], 2)}"
            if stream:
                st = v.get("stream_c1") or {}
                tt = (f"{f(st.get('ttfb_ms'), 2)} / {f(st.get('first_text_ms'), 2)} / {f(st.get('total_ms'), 2)}"
                      if "error" not in st else "error")
                out.append(f"| {labels[k]} | {_tput_s(v)} | {cpu_s} | "
                           f"{f(cpu * 1000 / CHUNKS if cpu is not None else None, 2)} | {lat} | "
                           f"{f(v['c64']['p99_ms'], 1)} | {tt} | {errs} |")
            else:
                out.append(f"| {labels[k]} | {_tput_s(v)} | {cpu_s} | {lat} | {f(v['c64']['p99_ms'], 1)} | "
                           f"{f(v['c1']['rps'])} | {errs} |")
        out.append("")
    out.append("¹ from the concurrency-1 runs: too few requests completed at concurrency 64 for the work "
               "left in flight to be negligible.")
    out.append("")
    out.append("² fewer than two requests per connection completed at concurrency 64 within the run; the "
               "figure is the better of the concurrency-1 and concurrency-64 medians.")
    out.append("")
    out.append("³ runs in which more than 1% of the answers were errors are left out of the medians "
               "(all runs' errors are counted here).")
    out.append("")

    # memory
    out.append("#### Memory (RSS of the whole process tree, MiB)")
    out.append("")
    out.append("| system | idle | max under load (c64) | open slow streams | RSS with them open | streams failed |")
    out.append("|---|---:|---:|---:|---:|---:|")
    for k in _systems(res):
        s = res["systems"][k]
        if s.get("status") != "ok" and not s.get("idle_rss_mb"):
            out.append(f"| {labels[k]} | {s.get('status')} | | | | |")
            continue
        st = s.get("streams") or {}
        if k == "direct":
            streams = ("n/a", "n/a", "")
        elif "error" in st:
            streams = (st["error"][:60], "", "")
        else:
            streams = (f"{st.get('established')}/{st.get('requested')}", f(st.get("rss_max_mb")),
                       f(st.get("failed")))
        out.append(f"| {labels[k]} | {f(s.get('idle_rss_mb'))} | {f(s.get('load_rss_mb'))} | "
                   f"{streams[0]} | {streams[1]} | {streams[2]} |")
    out.append("")

    # ratios
    out.append("#### Ratios")
    out.append("")
    out.append("Per system: throughput as a multiple of vandamme-proxy 2.0.9's · how many times less CPU per "
               "request than vandamme-proxy · throughput as a share of direct's (direct's req/s is bounded by wrk "
               "and the upstream sharing core 1, so a proxy on core 0 can exceed it).")
    out.append("")
    syst = [k for k in _systems(res) if k != "direct"]
    out.append("| scenario | " + " | ".join(f"{labels[k]}: req/s ×vdm · CPU ÷vdm · req/s of direct"
                                          for k in syst) + " |")
    out.append("|---|" + "---:|" * len(syst))
    for sck, title in SCEN:
        cells = []
        base, d = _sc(res, "vdm", sck), _sc(res, "direct", sck)
        for k in syst:
            v = _sc(res, k, sck)
            if not v:
                cells.append("–")
                continue
            if k == "vdm":
                r3 = ratio(tput(v), tput(d))
                cells.append(f"ref · ref · {f(r3 * 100 if r3 else None, 1, '%')}")
                continue
            r1 = ratio(tput(v), tput(base))
            r2 = ratio(base and base.get("cpu_ms_per_req"), v.get("cpu_ms_per_req"))
            r3 = ratio(tput(v), tput(d))
            cells.append(f"{f(r1, 1, '×')} · {f(r2, 1, '×')} · {f(r3 * 100 if r3 else None, 0, '%')}")
        out.append(f"| {sck} | " + " | ".join(cells) + " |")
    out.append("")

    out.extend(render_targets(res))
    tr = (res["systems"].get("vandamme") or {}).get("tracing")
    if tr:
        out.append("")
        out.extend(render_tracing(res, tr))
    return "\n".join(out)


def render_targets(res: dict) -> list[str]:
    vd = res["systems"].get("vandamme") or {}
    out = ["#### Targets (Vandamme)", ""]
    if not any(v.get("status") == "ok" for v in (vd.get("scenarios") or {}).values()):
        out.append(f"Not measured in this run: Vandamme {vd.get('status', 'was not run')}.")
        return out

    def sc(sys_, k):
        return _sc(res, sys_, k)

    rows = []

    def rps_ratio(k, want, label):
        a, b = sc("vandamme", k), sc("vdm", k)
        r = ratio(tput(a), tput(b))
        rows.append((label, f"≥{want}×", f(r, 1, "×"), None if r is None else r >= want))

    def cpu_max(k, limit_ms, label, per_chunk=False):
        a = sc("vandamme", k)
        x = a and a.get("cpu_ms_per_req")
        if per_chunk and x is not None:
            x = x * 1000 / CHUNKS
            rows.append((label, f"≤{limit_ms:g} µs", f(x, 1, " µs"), x <= limit_ms))
        else:
            rows.append((label, f"≤{limit_ms:g} ms", f(x, 3, " ms"), None if x is None else x <= limit_ms))

    rps_ratio("conv_small", 10, "converted non-stream small: req/s vs vandamme-proxy")
    cpu_max("conv_small", 0.8, "converted non-stream small: CPU per request")
    rps_ratio("conv_large", 8, "converted non-stream large: req/s vs vandamme-proxy")
    cpu_max("conv_large", 2.5, "converted non-stream large: CPU per request")
    rps_ratio("conv_stream", 30, "converted stream: streams/s vs vandamme-proxy")
    cpu_max("conv_stream", 50, "converted stream: CPU per chunk", per_chunk=True)
    a, d = sc("vandamme", "conv_stream"), sc("direct", "conv_stream")
    ta = a and (a.get("stream_c1") or {}).get("ttfb_ms")
    td = d and (d.get("stream_c1") or {}).get("ttfb_ms")
    added = None if ta is None or td is None else ta - td
    rows.append(("converted stream: time to first byte added over direct, c1", "≤2 ms", f(added, 2, " ms"),
                 None if added is None else added <= 2))
    rps_ratio("pass_large", 10, "passthrough non-stream: req/s vs vandamme-proxy")
    rps_ratio("pass_stream", 10, "passthrough stream: streams/s vs vandamme-proxy")
    st = vd.get("streams") or {}
    ok = st.get("rss_max_mb") is not None and st.get("established") == st.get("requested")
    rows.append((f"{st.get('requested', 1000)} open streams: RSS", "≤200 MB", f(st.get("rss_max_mb"), 1, " MiB")
                 + ("" if ok or not st else f" ({st.get('established')} open)"),
                 None if st.get("rss_max_mb") is None else (st["rss_max_mb"] <= 200 and ok)))
    vi, pi = vd.get("idle_rss_mb"), (res["systems"].get("vdm") or {}).get("idle_rss_mb")
    rows.append(("idle RSS below vandamme-proxy's", f"<{f(pi, 0, ' MiB') if pi else '~105 MiB'}",
                 f(vi, 1, " MiB"), None if vi is None else vi < (pi or 105)))
    tr = vd.get("tracing") or {}
    for vkey, label in tracing_variants(tr)[1:]:
        cost = tracing_cost(res, tr, vkey, "conv_small")
        rows.append((f"tracing {label}: throughput cost (small, c64)", f"≤{TRACING_TARGET * 100:.0f}%",
                     f(cost * 100 if cost is not None else None, 0, "%"),
                     None if cost is None else cost <= TRACING_TARGET))
    out.append("| target | wanted | measured | met |")
    out.append("|---|---|---:|---|")
    for label, want, got, met in rows:
        out.append(f"| {label} | {want} | {got} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return out


TRACING_TARGET = 0.15


def _tracing_label(vkey: str, v: dict) -> str:
    if v.get("sample_ratio") is None:
        return "off"
    return f"on, sample ratio {v['sample_ratio']:g}"


def tracing_variants(tr: dict) -> list[tuple[str, str]]:
    """[(key, label)], "off" first. Older results.json (one "on" run, "off" from the main tables)
    are read as the variants off and 1.0."""
    if "variants" in tr:
        return [(k, _tracing_label(k, tr["variants"][k])) for k in tr.get("order") or tr["variants"]]
    return [("off", "off"), ("1.0", "on, sample ratio 1")]


def _tracing_run(res: dict, tr: dict, vkey: str, key: str) -> dict | None:
    """{rps, cpu_ms_per_req, errors} of one variant and scenario, or None."""
    if "variants" in tr:
        v = (tr["variants"].get(vkey) or {}).get(key) or {}
        if v.get("status") == "ok":
            return v
        if vkey != "off":
            return None
    elif vkey != "off":
        v = tr.get(key) or {}
        return v if v.get("status") == "ok" else None
    main = _sc(res, "vandamme", key)  # off: fall back to the main tables' c64 run
    return main and {"rps": main["c64"]["rps"], "cpu_ms_per_req": main["c64"]["cpu_ms_per_req"],
                     "errors": main["c64"]["errors"], "from_main": True}


def tracing_cost(res: dict, tr: dict, vkey: str, key: str):
    on, off = _tracing_run(res, tr, vkey, key), _tracing_run(res, tr, "off", key)
    if not on or not off or not off.get("rps"):
        return None
    return 1 - on["rps"] / off["rps"]


def render_tracing(res: dict, tr: dict) -> list[str]:
    variants = tracing_variants(tr)
    ratios = [lab.rsplit(" ", 1)[-1] for k, lab in variants if k != "off"]
    out = [f"#### Vandamme tracing cost: off vs on (OTLP/HTTP to a local sink) at sample ratio "
           f"{' and '.join(ratios)}, c64", ""]
    out.append(f"| scenario | tracing | req/s | share of off | cost | CPU ms/req | errors | cost ≤{TRACING_TARGET * 100:.0f}% |")
    out.append("|---|---|---:|---:|---:|---:|---:|---|")
    off_from_main = False
    for key in ("conv_small", "conv_large"):
        off = _tracing_run(res, tr, "off", key)
        for vkey, label in variants:
            v = _tracing_run(res, tr, vkey, key)
            if not v:
                st = ((tr.get("variants") or {}).get(vkey) or {})
                why = (st.get(key) or {}).get("status") or st.get("status") or tr.get("status") or "–"
                out.append(f"| {key} | {label} | {why[:80]} | | | | | |")
                continue
            if vkey == "off":
                off_from_main = off_from_main or bool(v.get("from_main"))
                out.append(f"| {key} | {label}{' ⁴' if v.get('from_main') else ''} | {f(v['rps'])} | 100% | ref | "
                           f"{f(v['cpu_ms_per_req'], 3)} | {v.get('errors', 0)} | |")
                continue
            share = ratio(v["rps"], off and off["rps"])
            cost = None if share is None else 1 - share
            met = "–" if cost is None else ("yes" if cost <= TRACING_TARGET else "**no**")
            out.append(f"| {key} | {label} | {f(v['rps'])} | {f(share * 100 if share is not None else None, 0, '%')} | "
                       f"{f(cost * 100 if cost is not None else None, 0, '%')} | {f(v['cpu_ms_per_req'], 3)} | "
                       f"{v.get('errors', 0)} | {met} |")
    out.append("")
    if off_from_main:
        out.append("⁴ tracing off taken from the main tables' concurrency-64 run (this run did not measure "
                   "it again in the tracing block).")
        out.append("")
    sinks = []
    for vkey, label in variants:
        if vkey == "off":
            continue
        sink = ((tr.get("variants") or {}).get(vkey) or {}).get("sink") if "variants" in tr else tr.get("sink")
        sink = sink or {}
        sinks.append(f"{label}: {sink.get('requests', '?')} export requests ({sink.get('bytes', '?')} bytes)"
                     + (" — no export seen, tracing may not have been enabled" if not sink.get("requests") else ""))
    if sinks:
        out.append("OTLP sink received, " + "; ".join(sinks) + ".")
    return out


def update_doc(res: dict, doc: Path) -> None:
    text = doc.read_text() if doc.exists() else f"# Performance\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip() + f"\n\n## Results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + BEGIN + "\n" + render(res) + "\n" + END + tail)


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    rp = Path(sys.argv[1]) if len(sys.argv) > 1 else here / ".work" / "results.json"
    dp = Path(sys.argv[2]) if len(sys.argv) > 2 else here.parent / "docs" / "performance.md"
    update_doc(json.loads(rp.read_text()), dp)
    print(f"updated {dp}")

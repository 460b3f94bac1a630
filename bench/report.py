"""Render bench/.work/results.json as Markdown and put it into docs/performance.md between
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` (the rest of the document is left alone).

    python bench/report.py [results.json] [docs/performance.md]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ["direct", "nginx", "floor", "vdm", "ccr", "litellm", "vandamme"]
FLOOR = "floor"
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


def floor_ratio(res, sysk, sck):
    """CPU per request as a multiple of the stack floor's in the same scenario."""
    v, fl = _sc(res, sysk, sck), _sc(res, FLOOR, sck)
    return ratio(v and v.get("cpu_ms_per_req"), fl and fl.get("cpu_ms_per_req"))


def _floor_cell(res, sysk, sck):
    return "ref" if sysk == FLOOR else f(floor_ratio(res, sysk, sck), 2, "×")


def render(res: dict) -> str:
    m = res["meta"]
    out = []
    out.append(f"Last run: {m.get('date')} · {m.get('nproc')} CPUs ({m.get('cpu')}) · kernel {m.get('kernel')} · "
               f"Python {m.get('python')} · {m.get('nginx') or 'nginx ?'} · {m.get('wrk') or 'wrk ?'} · "
               f"gateway on core 0, upstream + load on core 1 · "
               f"wrk runs of {m.get('duration_s'):g} s at c64"
               + (f", {m['c1_duration_s']:g} s at c1" if m.get("c1_duration_s") else "")
               + f" × {m.get('repeat')} (medians) · "
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
            out.append("| system | streams/s c64 | CPU ms/stream | CPU µs/chunk | CPU × stack floor | p50 / p99 ms c1 "
                       "| p99 ms c64 | first byte / first text / whole stream ms c1 | errors |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        else:
            out.append("| system | req/s c64 | CPU ms/req | CPU × stack floor | p50 / p99 ms c1 | p99 ms c64 | req/s c1 "
                       "| errors |")
            out.append("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in _systems(res):
            s = res["systems"][k]
            v = (s.get("scenarios") or {}).get(sck)
            if not v or v.get("status") != "ok":
                st = (v or {}).get("status") or s.get("status") or "not run"
                st = st.replace("|", "/").replace("\n", " ")[:90]
                cols = 8 if stream else 7
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
                           f"{f(cpu * 1000 / CHUNKS if cpu is not None else None, 2)} | {_floor_cell(res, k, sck)} | "
                           f"{lat} | {f(v['c64']['p99_ms'], 1)} | {tt} | {errs} |")
            else:
                out.append(f"| {labels[k]} | {_tput_s(v)} | {cpu_s} | {_floor_cell(res, k, sck)} | {lat} | "
                           f"{f(v['c64']['p99_ms'], 1)} | {f(v['c1']['rps'])} | {errs} |")
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
    out.append("CPU × stack floor: CPU per request as a multiple of the Sanic+aiohttp stack floor's in the same "
               "scenario (in the converted scenarios the floor forwards to the Anthropic-format upstream: it "
               "converts nothing).")
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
        elif not st:
            streams = ("not run", "", "")
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

    out.extend(render_answers(res))
    out.extend(render_targets(res))
    vd = res["systems"].get("vandamme") or {}
    if vd.get("variants"):
        out.append("")
        out.extend(render_variants(vd["variants"]))
    if vd.get("workers"):
        out.append("")
        out.extend(render_workers(vd["workers"]))
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
        if per_chunk:
            x = None if x is None else x * 1000 / CHUNKS
            rows.append((label, f"≤{limit_ms:g} µs", f(x, 1, " µs"), None if x is None else x <= limit_ms))
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
    for k, limit, label in FLOOR_TARGETS:
        r = floor_ratio(res, "vandamme", k)
        rows.append((f"{label}: CPU per request vs the stack floor", f"≤{limit:g}×", f(r, 2, "×"),
                     None if r is None else r <= limit))
    st = vd.get("streams") or {}
    ok = st.get("rss_max_mb") is not None and st.get("established") == st.get("requested")
    rows.append((f"{st.get('requested', 1000)} open streams: RSS", "≤200 MB", f(st.get("rss_max_mb"), 1, " MiB")
                 + ("" if ok or not st else f" ({st.get('established')} open)"),
                 None if st.get("rss_max_mb") is None else (st["rss_max_mb"] <= 200 and ok)))
    vi, pi = vd.get("idle_rss_mb"), (res["systems"].get("vdm") or {}).get("idle_rss_mb")
    rows.append(("idle RSS below vandamme-proxy's", f"<{f(pi, 0, ' MiB') if pi else '~105 MiB'}",
                 f(vi, 1, " MiB"), None if vi is None else vi < (pi or 105)))
    variants = vd.get("variants") or {}
    for v in _variants(variants):
        if v["kind"] == "tracing":
            limit = tracing_limit(v)
            for key, size in (("conv_small", "small"), ("conv_large", "Claude-Code-sized")):
                added = cpu_added(variants, v["key"], key)
                if added is None:
                    continue
                rows.append((f"{v['label']}: gateway process CPU per request added ({size}, c64)",
                             f"≤{limit * 100:.0f}%", f(added * 100, 1, "%"), added <= limit))
    wk = vd.get("workers") or {}
    two = (wk.get("runs") or {}).get("2") or {}
    for key in ("conv_large", "pass_large"):
        share = (two.get(key) or {}).get("worker_cpu_share")
        if share:
            rows.append((f"2 workers, {key}: each worker's share of the work (CPU)", "≥40% each",
                         " / ".join(f"{x * 100:.0f}%" for x in share), min(share) >= 0.40))
    pss = {n: sum(p.get("pss_idle_mb") or 0.0 for p in (wk.get("runs") or {}).get(str(n), {}).get("processes") or [])
           for n in (2,)}
    extra = wk.get("idle_only") or {}
    if pss.get(2) and extra.get("processes"):
        per = sum(p["pss_idle_mb"] for p in extra["processes"]) - pss[2]
        rows.append(("memory per additional worker (PSS at idle, 2 → 3 workers)", "≤40 MiB", f(per, 1, " MiB"),
                     per <= 40))
    out.append("| target | wanted | measured | met |")
    out.append("|---|---|---:|---|")
    for label, want, got, met in rows:
        out.append(f"| {label} | {want} | {got} | {'–' if met is None else ('yes' if met else '**no**')} |")
    return out


TRACING_TARGET = 0.15  # CPU per request the gateway process may add with tracing on (issue 12)
UNSAMPLED_TARGET = 0.03  # ... for requests that are not sampled (sample ratio 0)


def tracing_limit(v: dict) -> float:
    return UNSAMPLED_TARGET if v.get("sample_ratio") == 0 else TRACING_TARGET


def cpu_added(variants: dict, vkey: str, key: str):
    """CPU per request the gateway's own process spends over the plain pipeline's, as a share of
    the plain pipeline's (0.1 = 10% more); None without both figures."""
    on, plain = _variant_run(variants, vkey, key), _variant_run(variants, "plain", key)
    if not on or not plain:
        return None
    a, b = on.get("cpu_ms_per_req_main"), plain.get("cpu_ms_per_req_main")
    if a is None or not b:
        return None
    return a / b - 1
# (scenario, most CPU per request as a multiple of the stack floor's, label)
FLOOR_TARGETS = [("pass_large", 1.10, "passthrough non-stream"), ("pass_stream", 1.10, "passthrough stream"),
                 ("conv_large", 1.4, "converted non-stream large")]


def _variants(variants: dict) -> list[dict]:
    """The variants of the block in run order, plain first."""
    return [variants["variants"][k] for k in variants.get("order") or []]


def _variant_run(variants: dict, vkey: str, key: str) -> dict | None:
    v = ((variants.get("variants") or {}).get(vkey) or {}).get(key) or {}
    return v if v.get("status") == "ok" else None


def variant_cost(variants: dict, vkey: str, key: str):
    """Throughput lost against the plain pipeline of the same block (0.2 = 20% fewer req/s)."""
    on, plain = _variant_run(variants, vkey, key), _variant_run(variants, "plain", key)
    if not on or not plain or not plain.get("rps"):
        return None
    return 1 - on["rps"] / plain["rps"]


def render_variants(variants: dict) -> list[str]:
    out = ["#### Vandamme pipeline variants against the plain pipeline (same block, c64)", "",
           "CPU ms/req is the whole process tree's; \"gateway process\" is the serving process alone and "
           "\"exporter\" the rest of the tree (with tracing on: the span exporter process, which the "
           f"tracing targets leave out: ≤{TRACING_TARGET * 100:.0f}% CPU per request added to the gateway "
           f"process when sampled, ≤{UNSAMPLED_TARGET * 100:.0f}% at sample ratio 0).", "",
           "| scenario | pipeline | req/s | share of plain | CPU ms/req | gateway process ms/req | added | "
           "exporter ms/req | errors | tracing target |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for key in sorted({k for v in _variants(variants) for k in v if k.startswith(("conv_", "pass_"))},
                      key=[k for k, _ in SCEN].index):
        for v in _variants(variants):
            run = _variant_run(variants, v["key"], key)
            if not run:
                why = (v.get(key) or {}).get("status") or v.get("status") or "–"
                out.append(f"| {key} | {v['label']} | {why[:120]} | | | | | | | |")
                continue
            cost = variant_cost(variants, v["key"], key)
            added = cpu_added(variants, v["key"], key)
            is_plain = v["key"] == "plain"
            met = "" if v["kind"] != "tracing" or added is None else (
                f"{'yes' if added <= tracing_limit(v) else '**no**'} (≤{tracing_limit(v) * 100:.0f}%)")
            out.append(f"| {key} | {v['label']} | {f(run['rps'])} | "
                       f"{'100%' if is_plain else f((1 - cost) * 100 if cost is not None else None, 0, '%')} | "
                       f"{f(run['cpu_ms_per_req'], 3)} | {f(run.get('cpu_ms_per_req_main'), 3)} | "
                       f"{'ref' if is_plain else f(added * 100 if added is not None else None, 1, '%')} | "
                       f"{f(run.get('cpu_ms_per_req_others'), 3)} | {run.get('errors', 0)} | {met} |")
    out.append("")
    sinks = [f"{v['label']}: {(v.get('sink') or {}).get('requests', '?')} export requests "
             f"({(v.get('sink') or {}).get('bytes', '?')} bytes)"
             + ("" if (v.get("sink") or {}).get("requests") or v.get("sample_ratio") == 0
                else " — no export seen, tracing may not have been on")
             for v in _variants(variants) if v["kind"] == "tracing"]
    if sinks:
        out.append("OTLP sink received, " + "; ".join(sinks) + ".")
    return out


def render_workers(workers: dict) -> list[str]:
    runs = [(n, workers["runs"].get(str(n)) or {}) for n in workers.get("order") or []]
    base = runs[0][1] if runs else {}
    out = ["#### Vandamme workers, unpinned (both cores; wrk and the upstream share core 1), c64", "",
           "| scenario | workers | req/s | × 1 worker | CPU ms/req | each worker's share of the workers' CPU | errors |",
           "|---|---:|---:|---:|---:|---|---:|"]
    keys = [k for k, _ in SCEN if any(k in run for _, run in runs)]
    for key in keys:
        for n, run in runs:
            v = run.get(key) or {}
            if v.get("status") != "ok":
                out.append(f"| {key} | {n} | {(v.get('status') or run.get('status') or '–')[:120]} | | | | |")
                continue
            b = (base.get(key) or {}).get("rps")
            share = " / ".join(f"{x * 100:.0f}%" for x in v.get("worker_cpu_share") or []) or "–"
            out.append(f"| {key} | {n} | {f(v['rps'])} | {f(ratio(v['rps'], b), 2, '×')} | "
                       f"{f(v['cpu_ms_per_req'], 3)} | {share} | {v.get('errors', 0)} |")
    out += ["", "RSS of every process of the server, MiB (idle → maximum under load; the sum's maximum is "
            "sampled as one figure, so it can be below the sum of the per-process maxima):", "",
            "| workers | RSS, all processes | PSS at idle, all processes | per process (RSS idle → max; PSS idle) |",
            "|---:|---:|---:|---|"]
    for n, run in runs:
        procs = run.get("processes") or []
        per = " · ".join(f"{p['role']} {f(p['idle_mb'])} → {f(p['load_max_mb'])}; {f(p.get('pss_idle_mb'))}"
                         for p in procs)
        idle = sum(p["idle_mb"] for p in procs)
        pss = sum(p.get("pss_idle_mb") or 0.0 for p in procs)
        out.append(f"| {n} | {f(idle)} → {f(run.get('rss_max_mb'))} | {f(pss)} | {per or run.get('status', '–')} |")
    pss = {n: sum(p.get("pss_idle_mb") or 0.0 for p in run.get("processes") or []) for n, run in runs}
    extra = workers.get("idle_only") or {}
    if extra.get("processes"):
        pss[extra["workers"]] = sum(p["pss_idle_mb"] for p in extra["processes"])
        out.append(f"| {extra['workers']} (idle only) | | {f(pss[extra['workers']])} | "
                   + " · ".join(f"{p['role']} {f(p['pss_idle_mb'])}" for p in extra["processes"]) + " |")
    counts = sorted(n for n, v in pss.items() if v)
    if len(counts) >= 2:
        steps = [f"{a} → {b} workers: +{pss[b] - pss[a]:.1f} MiB" for a, b in zip(counts, counts[1:])]
        out += ["", "PSS added at idle (RSS counts the pages forked workers share with the main process once "
                "per process; PSS splits them among the sharers, so its sum is what the server takes from the "
                "machine): " + "; ".join(steps) + ". Going from 1 worker to 2 also adds the main process and "
                "Sanic's manager process, once; each step after that is one worker (target ≤ 40 MiB per "
                "additional worker)."]
    return out


def render_answers(res: dict) -> list[str]:
    """Per gateway, what the answer audit found (each finding with the cases it showed in)."""
    out = ["#### Answers (audit against a recording upstream: each gateway's answers and what it sent upstream)",
           ""]
    for k in _systems(res):
        a = res["systems"][k].get("answers")
        if not a:
            continue
        label = res["systems"][k]["label"]
        if a.get("status") != "ok":
            out.append(f"- **{label}**: {a.get('status')}")
            continue
        where: dict[str, list[str]] = {}
        for case in a["cases"].values():
            for finding in case["findings"]:
                where.setdefault(finding, []).append(case["label"])
        cases = ", ".join(c["label"] for c in a["cases"].values())
        if not where:
            out.append(f"- **{label}**: correct in every case ({cases}).")
            continue
        out.append(f"- **{label}** (cases: {cases}):")
        out += [f"  - {finding.replace('|', '/')} — {', '.join(labels)}" for finding, labels in where.items()]
    out.append("")
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

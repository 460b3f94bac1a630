"""Tracing cost, A/B: Vandamme gateways with different spec folders side by side (all on core 0),
loaded in turn by wrk (core 1) in short slices, round after round, so that a change in the
machine's load touches them alike; prints each gateway's own CPU per request (its serving
process) and, apart, the rest of its process tree (the span exporter process).

    .venv/bin/python bench/tracing_ab.py [--body small_converted.json] [--rounds 6] [--slice 2] \\
        SPEC_DIR [SPEC_DIR ...]

Uses what ``bench/run.py`` leaves in bench/.work (the nginx upstream's configuration and answers,
the request bodies): run ``make bench`` (or any ``bench/run.py`` run) once first. Each spec folder
is served as is; to trace, give one with a ``telemetry:`` overlay (the OTLP sink,
``bench/otlp_sink.py``, listens on 127.0.0.1:18912: ``otlp_endpoint: http://127.0.0.1:18912/x``).
Every process started here is stopped on exit; only 127.0.0.1 is contacted.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / ".work"
PY = str(ROOT / ".venv" / "bin" / "python")
UP_PORT, OTLP_PORT, FIRST_PORT = 18901, 18912, 18930


def cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [int(x) for x in out]


def wrk(port: int, body: Path, seconds: str, conns: int = 64) -> int:
    out = subprocess.run(["taskset", "-c", "1", "wrk", "-t1", f"-c{conns}", f"-d{seconds}", "-s",
                          str(HERE / "post.lua"), f"http://127.0.0.1:{port}/v1/messages"],
                         env=dict(os.environ, BENCH_BODY=str(body)), capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"^BENCH_JSON (\{.*\})$", out, re.M)
    if not m:
        raise RuntimeError(f"wrk gave no summary: {out[-300:]}")
    return json.loads(m.group(1))["ok"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("specs", nargs="+")
    ap.add_argument("--body", default="small_converted.json")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--slice", default="2", help="seconds of load per gateway per round")
    args = ap.parse_args()
    body = WORK / "bodies" / args.body
    if not body.exists() or not (WORK / "nginx-upstream.conf").exists():
        print("bench/.work has no bodies or upstream configuration: run bench/run.py once", file=sys.stderr)
        return 2
    procs: list[subprocess.Popen] = []

    def start(argv, **kw):
        p = subprocess.Popen(argv, start_new_session=True, stdout=kw.pop("stdout", subprocess.DEVNULL),
                             stderr=subprocess.STDOUT, **kw)
        procs.append(p)
        return p

    try:
        start(["taskset", "-c", "1", "nginx", "-p", str(WORK), "-c", str(WORK / "nginx-upstream.conf")])
        start(["taskset", "-c", "1", PY, str(HERE / "otlp_sink.py"), "--port", str(OTLP_PORT)])
        gateways = []
        for i, spec in enumerate(args.specs):
            env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
            env.update(OPENAI_API_KEY="bench", OPENAI_BASE_URL=f"http://127.0.0.1:{UP_PORT}/json/v1",
                       ANTHROPIC_API_KEY="bench", ANTHROPIC_BASE_URL=f"http://127.0.0.1:{UP_PORT}/json",
                       HOST="127.0.0.1", PORT=str(FIRST_PORT + i), NO_PROXY="*")
            gateways.append(start(["taskset", "-c", "0", str(ROOT / ".venv" / "bin" / "vandamme"), "run", spec],
                                  env=env, stdout=open(WORK / f"tracing-ab-{i}.log", "wb")))
        time.sleep(3)
        for i in range(len(gateways)):
            wrk(FIRST_PORT + i, body, "1s", 8)  # warm-up
        totals = [[0.0, 0.0, 0] for _ in gateways]
        for _ in range(args.rounds):
            for i, g in enumerate(gateways):
                own0, rest0 = cpu(g.pid), sum(cpu(k) for k in children(g.pid))
                n = wrk(FIRST_PORT + i, body, f"{args.slice}s")
                own1, rest1 = cpu(g.pid), sum(cpu(k) for k in children(g.pid))
                totals[i][0] += own1 - own0
                totals[i][1] += rest1 - rest0
                totals[i][2] += n
        base = totals[0][0] / max(1, totals[0][2])
        for spec, (own, rest, n) in zip(args.specs, totals):
            per = own / max(1, n)
            print(f"{spec}: gateway process {per * 1e6:6.1f} µs/req ({(per / base - 1) * 100:+5.1f}% vs the first)"
                  f", exporter {rest / max(1, n) * 1e6:5.1f} µs/req, {n} requests")
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(2)
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

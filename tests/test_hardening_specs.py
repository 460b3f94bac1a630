"""Hostile spec folders fail fast and cleanly (vandamme/engine/loader.py limits): alias bombs, deep nesting
and huge files are spec errors with file[:line:col], never a traceback, in `vandamme validate`,
`vandamme run` and a reload. And a reload loads and compiles off the event loop: requests are
answered promptly while a large spec is compiled."""
from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from vandamme.engine.compiler import compile_gateway
from vandamme.engine.loader import MAX_ALIAS_VALUES, MAX_DEPTH, MAX_FILE_BYTES, MAX_FOLDER_BYTES, load_spec
from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway

ROOT = Path(__file__).resolve().parent.parent
VALID = "version: 1\ndefault_provider: a\nproviders:\n  a: {format: openai, base_url: 'http://127.0.0.1:9/v1', " \
        "requires_key: false}\n"


def billion_laughs() -> str:
    text = VALID + "x0: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for i in range(1, 10):
        text += f"x{i}: &{'abcdefghij'[i]} [" + ", ".join([f"*{'abcdefghij'[i - 1]}"] * 10) + "]\n"
    return text


def nested_flow(depth: int) -> str:
    return VALID + "x: " + "[" * depth + "]" * depth + "\n"


def nested_block(depth: int) -> str:
    return VALID + "".join("  " * i + f"k{i}:\n" for i in range(depth)) + "  " * depth + "v\n"


def alias_chain(depth: int) -> str:
    """Each anchor wraps the previous one: shallow text, deep data."""
    text = VALID + "c0: &c0 [x]\n"
    for i in range(1, depth):
        text += f"c{i}: &c{i} [*c{i - 1}]\n"
    return text


def cli(*args: str, limit: float = 20) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "vandamme.engine.cli", *args], capture_output=True, text=True,
                          timeout=limit, cwd=ROOT)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


def folder(tmp_path: Path, **files: str) -> Path:
    specs = tmp_path / "specs"
    specs.mkdir()
    for name, text in files.items():
        (specs / name).write_text(text)
    return specs


def sized(path: Path, size: int) -> None:
    """A file of ``size`` bytes without writing them (sparse)."""
    with path.open("wb") as f:
        f.truncate(size)


@pytest.mark.parametrize("text, where, message", [
    (billion_laughs(), ":8:5: x4[7]: ", f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values"),
    (nested_flow(10_000), ":5:67: ", f"nested deeper than {MAX_DEPTH} levels"),
    (nested_block(300), ":68:", f"nested deeper than {MAX_DEPTH} levels"),
    (alias_chain(200), ":68:6: c64[0]: ", f"nested deeper than {MAX_DEPTH} levels (through YAML aliases)"),
], ids=["billion-laughs", "deep-flow", "deep-block", "deep-aliases"])
def test_hostile_yaml_is_a_quick_clean_spec_error(tmp_path, text, where, message):
    specs = folder(tmp_path, **{"s.yaml": text})
    code, out, took = cli("validate", str(specs))
    assert code == 1 and took < 10, (code, took, out)
    assert "Traceback" not in out and "Error:" not in out
    line = next(l for l in out.splitlines() if message in l)
    assert f"s.yaml{where}" in line, line


def test_a_huge_file_is_refused_before_it_is_parsed(tmp_path):
    specs = folder(tmp_path, **{"a.yaml": VALID})
    sized(specs / "b.yaml", 57 << 20)
    code, out, took = cli("validate", str(specs))
    assert code == 1 and took < 10 and "Traceback" not in out
    assert f"b.yaml: file is 57 MiB; a spec file may be at most {MAX_FILE_BYTES >> 20} MiB" in out


def test_a_huge_folder_is_refused(tmp_path):
    specs = folder(tmp_path, **{"a.yaml": VALID})
    for i in range(MAX_FOLDER_BYTES // MAX_FILE_BYTES + 1):
        sized(specs / f"b{i}.yaml", MAX_FILE_BYTES)
    code, out, took = cli("validate", str(specs))
    assert code == 1 and took < 10 and "Traceback" not in out
    assert f"a spec folder may hold at most {MAX_FOLDER_BYTES >> 20} MiB" in out


def test_run_refuses_a_hostile_spec_cleanly(tmp_path):
    specs = folder(tmp_path, **{"s.yaml": billion_laughs()})
    code, out, took = cli("run", str(specs))
    assert code == 1 and took < 10 and "Traceback" not in out
    assert f"YAML aliases expand to more than {MAX_ALIAS_VALUES} values" in out


def big_spec(upstream: str, providers: int) -> str:
    lines = ["version: 1", "default_provider: a", "providers:",
             f"  a: {{format: anthropic, base_url: '{upstream}', api_keys: [k-000000000000]}}"]
    for i in range(providers):
        lines += [f"  p{i}:", "    format: openai", f"    base_url: http://127.0.0.1:9/v{i}",
                  "    requires_key: false", "    models: [" + ", ".join(f"m{j}" for j in range(20)) + "]",
                  "    aliases:"] + [f"      a{j}: m{j}" for j in range(10)]
    return "\n".join(lines) + "\n"


def test_reload_compiles_off_the_event_loop_and_refuses_hostile_specs(tmp_path):
    fake = FakeAnthropic()
    spec = lambda u: f"version: 1\ndefault_provider: a\nproviders:\n  a: {{format: anthropic, " \
                     f"base_url: '{u['a']}', api_keys: [k-000000000000]}}\n"
    with LiveGateway(spec, {"a": fake}, tmp_path) as gw:
        live = gw.app.ctx.live
        specs = tmp_path / "specs"
        live.reloader = lambda: compile_gateway(load_spec(specs, {}))

        # a hostile spec: rejected, generation 1 goes on serving
        (specs / "gateway.yaml").write_text(billion_laughs())
        assert gw.call(live.reload()) is False
        assert httpx.get(gw.base_url + "/health", timeout=5).json()["generation"] == 1

        # a large valid one (~0.4 MiB, seconds to load and compile): requests are answered meanwhile
        (specs / "gateway.yaml").write_text(big_spec(fake.base_url, 1200))
        t0 = time.monotonic()
        reload = asyncio.run_coroutine_threadsafe(live.reload(), gw.loop)
        answered = 0
        while not reload.done() and time.monotonic() - t0 < 30:
            r = httpx.post(gw.base_url + "/v1/messages", timeout=5, headers={"x-api-key": "k"},
                           json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 200
            answered += 1
            time.sleep(0.05)
        took = time.monotonic() - t0
        assert reload.result(30) is True
        assert took > 1.0, took  # the reload really took a while ...
        # ... and requests went on: a compile on the event loop would hold the first request until
        # the reload was over (one answer); off the loop, one answer every ~50 ms meanwhile
        assert answered >= 5, answered
        assert httpx.get(gw.base_url + "/health", timeout=5).json()["generation"] == 2

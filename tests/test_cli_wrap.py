"""`vandamme wrap claude` and `claude.vdm`, with a stand-in `claude` (a small Python script) that
checks the ANTHROPIC_BASE_URL it was given by calling its /health, records what it saw and exits
with a chosen code; and, where `make claude-code` installed it, with the real Claude Code CLI."""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from fakes.openai_upstream import FakeOpenAI
from harness import ROOT, LiveGateway, free_port, run_cli
from test_cli_ops import Background

STANDIN = """#!{python}
import json, os, sys, time, urllib.request
url = os.environ["ANTHROPIC_BASE_URL"]
opener = urllib.request.build_opener(urllib.request.ProxyHandler({{}}))
health = json.load(opener.open(url + "/health", timeout=10))
with open({record!r}, "w") as f:
    json.dump({{"url": url, "status": health.get("status"), "generation": health.get("generation"),
               "api_key": os.environ.get("ANTHROPIC_API_KEY"), "argv": sys.argv[1:]}}, f)
if os.environ.get("STANDIN_SLEEP"):
    time.sleep(float(os.environ["STANDIN_SLEEP"]))
sys.exit(int(os.environ.get("STANDIN_EXIT", "0")))
"""


@pytest.fixture
def standin(tmp_path):
    record = tmp_path / "seen.json"
    path = tmp_path / "bin" / "claude"
    path.parent.mkdir()
    path.write_text(STANDIN.format(python=sys.executable, record=str(record)))
    path.chmod(0o755)
    return path, record


def spec_folder(tmp_path, port: int | None = None, base_url: str = "http://127.0.0.1:9/v1") -> Path:
    folder = tmp_path / "specs"
    folder.mkdir(exist_ok=True)
    server = f"server: {{port: {port}}}\n" if port else ""
    (folder / "gateway.yaml").write_text(f"""version: 1
{server}default_provider: openai
providers:
  openai: {{format: openai, base_url: "{base_url}"}}
""")
    return folder


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_wrap_starts_a_gateway_passes_the_exit_code_and_stops_it(tmp_path, standin):
    claude, record = standin
    folder = spec_folder(tmp_path, port=free_port())  # nothing listens on the configured port
    r = run_cli("wrap", "--dir", str(folder), "--claude", str(claude), "claude", "-p", "hello", "--model", "opus",
                env={"STANDIN_EXIT": "7"})
    assert r.returncode == 7, r.stderr
    seen = json.loads(record.read_text())
    assert seen["status"] == "degraded" and seen["generation"] == 1  # a Vandamme answered (no key here)
    assert seen["argv"] == ["-p", "hello", "--model", "opus"]
    assert seen["api_key"] == "vandamme-wrap-placeholder"  # Claude Code needs one; none was set
    assert f"started a gateway on {seen['url']}" in r.stderr
    assert closed(port_of(seen["url"])), "the gateway wrap started is still listening"
    log = re.search(r"\(log: (.+?)\)", r.stderr).group(1)
    assert not Path(log).exists()  # its output file goes with it after a clean stop


def test_wrap_reuses_a_running_gateway_and_leaves_it_running(tmp_path, standin):
    claude, record = standin

    def spec(urls):
        return f'version: 1\nproviders:\n  openai: {{format: openai, base_url: "{urls["openai"]}", api_keys: [sk-k-12345678]}}\n'

    with LiveGateway(spec, {"openai": FakeOpenAI()}, tmp_path) as gw:
        folder = spec_folder(tmp_path, port=port_of(gw.base_url))
        r = run_cli("wrap", "--dir", str(folder), "--claude", str(claude), "claude",
                    env={"STANDIN_EXIT": "0", "ANTHROPIC_API_KEY": "sk-ant-mine-000"})
        still = run_cli("health", "server", gw.base_url)
    assert r.returncode == 0, r.stderr
    seen = json.loads(record.read_text())
    assert seen["url"] == gw.base_url and seen["status"] == "ok"
    assert seen["api_key"] == "sk-ant-mine-000"  # the user's own is kept
    assert f"using the gateway already running at {gw.base_url}" in r.stderr
    assert still.returncode == 0  # not stopped: wrap did not start it


def test_wrap_with_something_else_on_the_port_starts_its_own(tmp_path, standin):
    claude, record = standin
    other = FakeOpenAI()  # answers 404 on /health: not a Vandamme
    with Background(other):
        folder = spec_folder(tmp_path, port=other.port)
        r = run_cli("wrap", "--dir", str(folder), "--claude", str(claude), "claude", env={"STANDIN_EXIT": "3"})
    assert r.returncode == 3, r.stderr
    seen = json.loads(record.read_text())
    assert port_of(seen["url"]) != other.port and closed(port_of(seen["url"]))


def test_claude_vdm_console_script(tmp_path, standin):
    script = Path(sysconfig.get_path("scripts")) / "claude.vdm"
    if not script.exists():
        pytest.skip(f"{script} not installed (pip install -e . creates it)")
    claude, record = standin
    folder = spec_folder(tmp_path, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(CLAUDE_BIN=str(claude), VDM_SPECS=str(folder), STANDIN_EXIT="5")
    r = subprocess.run([str(script), "--print", "hi"], capture_output=True, text=True, env=env, cwd=tmp_path,
                       timeout=60)
    assert r.returncode == 5, r.stderr
    seen = json.loads(record.read_text())
    assert seen["argv"] == ["--print", "hi"] and closed(port_of(seen["url"]))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_wrap_stops_its_gateway_on_ctrl_c_and_sigterm(tmp_path, standin, sig):
    """Ctrl-C reaches the terminal's whole foreground group (wrap and claude, not the gateway, which
    runs in its own session); SIGTERM goes to wrap alone, which passes it on to claude."""
    claude, record = standin
    folder = spec_folder(tmp_path, port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(STANDIN_SLEEP="60")
    proc = subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", "wrap", "--dir", str(folder), "--claude", str(claude),
                             "claude"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not record.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert record.exists(), proc.communicate(timeout=10)
        time.sleep(0.2)  # the stand-in has written its record; let it reach its sleep
        if sig == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        else:
            proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 128 + sig, err
    seen = json.loads(record.read_text())
    assert closed(port_of(seen["url"])), "the gateway outlived wrap"


def test_wrap_reports_a_missing_claude_and_a_gateway_that_cannot_start(tmp_path, standin):
    claude, _ = standin
    missing = run_cli("wrap", "--claude", str(tmp_path / "nope"), "claude")
    assert missing.returncode == 127 and "Claude Code not found" in missing.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.yaml").write_text("version: 1\nprovders: {}\n")
    r = run_cli("wrap", "--dir", str(bad), "--fresh", "--claude", str(claude), "claude")
    assert r.returncode == 1
    assert "the gateway did not start: `vandamme run` exited with code 1" in r.stderr
    assert "did you mean 'providers'" in r.stderr  # the gateway's own error, from its log


CLAUDE = ROOT / ".tools" / "claude-code" / "node_modules" / ".bin" / "claude"


@pytest.mark.skipif(not CLAUDE.exists(), reason="Claude Code CLI not installed (`make claude-code`, needs npm)")
def test_wrap_runs_the_real_claude_code_through_the_gateway_it_starts(tmp_path):
    fake = FakeOpenAI()
    with Background(fake):
        folder = tmp_path / "specs"
        folder.mkdir()
        (folder / "gateway.yaml").write_text(f"""version: 1
default_provider: openai
providers:
  openai:
    format: openai
    base_url: "{fake.base_url}"
    aliases: {{haiku: gpt-4o-mini, sonnet: gpt-4o, opus: gpt-4o}}
""")
        (folder / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv-000000\n")
        home = tmp_path / "home"
        home.mkdir()
        env = {"HOME": str(home), "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
               "DISABLE_ERROR_REPORTING": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}
        e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "ANTHROPIC_BASE_URL"}
        e.update(env)
        r = subprocess.run([sys.executable, "-m", "vandamme.engine.cli", "wrap", "--dir", str(folder), "--claude", str(CLAUDE),
                            "claude", "-p", "Say hello"], cwd=ROOT, env=e, capture_output=True, text=True,
                           timeout=180, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Hello! How can I help you today?" in r.stdout
    chats = [q for q in fake.requests if q["path"].endswith("chat/completions")]
    assert chats and all(q["headers"]["Authorization"] == "Bearer sk-from-dotenv-000000" for q in chats)

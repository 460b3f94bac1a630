"""Hot reload: a new spec set is compiled beside the old one and swapped only if valid; a request
in flight finishes on the graph it started with."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import anthropic
import httpx

from vandamme.engine.compiler import compile_gateway
from vandamme.engine.loader import load_spec
from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from harness import LiveGateway, free_port


def spec(model_alias):
    return lambda u: f"""
version: 1
default_provider: a
providers:
  a:
    format: anthropic
    base_url: "{u['a']}"
    api_keys: [k-000000000000]
    aliases: {{fast: {model_alias}}}
"""


def test_reload_swaps_only_valid_specs_and_keeps_in_flight_streams(tmp_path):
    fake = FakeAnthropic()
    with LiveGateway(spec("model-one"), {"a": fake}, tmp_path) as gw:
        app_live = gw.app.ctx.live
        spec_file = tmp_path / "specs" / "gateway.yaml"
        reloader = lambda: compile_gateway(load_spec(tmp_path / "specs", {}))
        app_live.reloader = reloader
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=15)

        # a slow stream starts on generation 1
        fake.enqueue(AnthropicReply(text="one two three four five six", chunk_delay=0.15))
        result = {}

        def slow_stream():
            with c.messages.stream(model="fast", max_tokens=5, messages=[{"role": "user", "content": "x"}]) as s:
                result["text"] = s.get_final_text()

        t = threading.Thread(target=slow_stream)
        t.start()
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
        old_session = gw.gateway.providers["a"].session

        # an invalid spec is rejected: generation 1 keeps serving
        spec_file.write_text(spec_file.read_text().replace("format: anthropic", "format: opanai"))
        assert gw.call(app_live.reload()) is False
        assert httpx.get(gw.base_url + "/health", timeout=5).json()["generation"] == 1

        # a valid one is swapped in while the stream is still running
        spec_file.write_text(spec_file.read_text().replace("opanai", "anthropic").replace("model-one", "model-two"))
        assert gw.call(app_live.reload()) is True
        assert httpx.get(gw.base_url + "/health", timeout=5).json()["generation"] == 2
        c.messages.create(model="fast", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert fake.requests[-1]["json"]["model"] == "model-two"

        t.join(15)
        assert result["text"] == "one two three four five six"  # finished on generation 1
        assert fake.requests[0]["json"]["model"] == "model-one"
        deadline = time.monotonic() + 5
        while old_session is not None and not old_session.closed and time.monotonic() < deadline:
            time.sleep(0.02)
        assert old_session.closed  # generation 1's pools closed once its last request ended


def test_sighup_reloads_a_running_server(tmp_path):
    specs = tmp_path / "specs"
    specs.mkdir()
    port = free_port()
    body = "version: 1\nserver: {host: 127.0.0.1, port: %d}\ndefault_provider: o\nproviders:\n" \
           "  o: {format: openai, base_url: 'http://127.0.0.1:9/v1', requires_key: false}\n" % port
    (specs / "a.yaml").write_text(body)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", "run", str(specs)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}/health"
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert httpx.get(url, timeout=2).json()["providers"][0]["name"] == "o"
        (specs / "b.yaml").write_text("providers:\n  p: {format: anthropic, base_url: 'http://127.0.0.1:9', "
                                      "requires_key: false}\n")
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        names = []
        while time.monotonic() < deadline:
            data = httpx.get(url, timeout=2).json()
            names = [p["name"] for p in data["providers"]]
            if data["generation"] == 2:
                break
            time.sleep(0.1)
        assert names == ["o", "p"]
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

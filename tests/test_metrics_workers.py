"""Metrics of a real `vandamme run` process (a subprocess, a spec folder in tmp_path, fake upstreams
on 127.0.0.1): with ``--workers 2`` requests land on both workers and one scrape of the port shows
them all (prometheus_client multiprocess mode), as do the running totals and the recent requests;
the multiprocess folder lives in a private temp folder removed at exit. With one worker, SIGHUP
reloads are counted (ok and rejected)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import FakeOpenAI
from harness import ROOT, Background, free_port

USER = [{"role": "user", "content": "hello"}]


@pytest.fixture
def upstreams():
    """FakeOpenAI and FakeAnthropic served from a background event loop."""
    fakes = {"oa": FakeOpenAI(), "an": FakeAnthropic()}
    with Background(*fakes.values()):
        yield fakes


def write_spec(folder: Path, port: int, fakes: dict, broken: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(f"""
version: 1
server: {{port: {port}, max_retries: 0}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{fakes['oa'].base_url}", api_keys: [sk-oa-workers-0123456789]}}
  an: {{format: anthropic, base_url: "{fakes['an'].base_url}", api_keys: [sk-an-workers-0123456789]}}
""" + ("routes: [{match: {model: x}, to: nowhere:y}]\n" if broken else ""))


class Served:
    """``vandamme run SPECS [--workers N]`` as a subprocess; stopped (SIGTERM) on exit."""

    def __init__(self, specs: Path, port: int, workers: int, tmp: Path):
        env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY") and k != "PROMETHEUS_MULTIPROC_DIR"}
        env["TMPDIR"] = str(tmp)  # where the private multiprocess folder goes
        args = [sys.executable, "-m", "vandamme.engine.cli", "run", str(specs)] + (["--workers", str(workers)] if workers > 1 else [])
        self.proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, start_new_session=True)  # a kill of its group spares pytest
        self.base_url = f"http://127.0.0.1:{port}"
        self.output = ""

    def __enter__(self):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"vandamme run exited: {self.proc.communicate()[0]}")
            try:
                if httpx.get(self.base_url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise AssertionError("vandamme run did not answer /health within 30 s")

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.output = self.proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # the main process, its workers and manager
            self.output = self.proc.communicate(timeout=10)[0]


def scrape(base_url: str) -> dict:
    r = httpx.get(base_url + "/metrics", timeout=10)
    assert r.status_code == 200, r.text
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def total(fams: dict, family: str, sample: str, **labels) -> float:
    return sum(s.value for s in fams.get(family, []) if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_two_workers_one_scrape_shows_every_request(tmp_path, upstreams):
    port = free_port()
    write_spec(tmp_path / "specs", port, upstreams)
    with Served(tmp_path / "specs", port, 2, tmp_path) as served:
        folders = list(tmp_path.glob("vandamme-metrics-*"))
        assert len(folders) == 1  # the private multiprocess folder, while serving

        def one(i: int) -> tuple[str, str]:
            # a new connection per request (connection: close), so the kernel hands them to either worker
            c = anthropic.Anthropic(base_url=served.base_url, api_key="client-key", max_retries=0, timeout=15,
                                    default_headers={"connection": "close"})
            model = "oa:gpt-4o" if i % 2 else "an:claude-x"
            with c:
                if i % 3 == 0:
                    with c.messages.stream(model=model, max_tokens=20, messages=USER) as s:
                        s.get_final_message()
                        return s.response.headers["request-id"], model
                raw = c.messages.with_raw_response.create(model=model, max_tokens=20, messages=USER)
                return raw.headers["request-id"], model

        sent: list[tuple[str, str]] = []
        workers_seen: set[str] = set()
        with ThreadPoolExecutor(6) as pool:
            for _ in range(10):  # bounded: until both workers have answered (normally the first round)
                for rid, model in pool.map(one, range(len(sent), len(sent) + 24)):
                    sent.append((rid, model))
                    workers_seen.add(rid[4:12])  # request ids carry their worker's prefix
                if len(workers_seen) == 2:
                    break
        assert len(workers_seen) == 2, "every request landed on one worker"
        n = len(sent)

        deadline = time.monotonic() + 10
        while True:  # a stream is recorded when its last byte is out: settle (bounded)
            fams = scrape(served.base_url)
            if total(fams, "vandamme_requests", "vandamme_requests_total") == n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert total(fams, "vandamme_requests", "vandamme_requests_total") == n
        assert total(fams, "vandamme_requests", "vandamme_requests_total", status="200", error_type="") == n
        n_oa = sum(1 for _, m in sent if m.startswith("oa:"))
        assert total(fams, "vandamme_requests", "vandamme_requests_total", provider="oa") == n_oa
        assert total(fams, "vandamme_upstream_attempts", "vandamme_upstream_attempts_total") == n
        assert total(fams, "gen_ai_client_operation_duration_seconds",
                     "gen_ai_client_operation_duration_seconds_count") == n
        assert total(fams, "gen_ai_client_token_usage", "gen_ai_client_token_usage_sum",
                     gen_ai_token_type="input") == 12 * n
        assert total(fams, "vandamme_active_streams", "vandamme_active_streams") == 0

        totals = httpx.get(served.base_url + "/metrics/running-totals", timeout=10).json()
        assert totals["workers"] == 2
        assert totals["overall"]["requests"] == n and totals["overall"]["errors"] == 0
        assert totals["overall"]["output_tokens"] == 7 * n
        assert totals["providers"]["oa"]["requests"] == n_oa and totals["providers"]["an"]["requests"] == n - n_oa
        recent = httpx.get(served.base_url + f"/metrics/recent?limit={n + 10}", timeout=10).json()["data"]
        assert {row["request_id"] for row in recent} == {rid for rid, _ in sent}
        assert {row["request_id"][4:12] for row in recent} == workers_seen
    assert served.proc.returncode == 0, served.output
    assert not list(tmp_path.glob("vandamme-metrics-*")), "the multiprocess folder was left behind"


def test_reloads_are_counted(tmp_path, upstreams):
    port = free_port()
    specs = tmp_path / "specs"
    write_spec(specs, port, upstreams)
    with Served(specs, port, 1, tmp_path) as served:
        assert not list(tmp_path.glob("vandamme-metrics-*"))  # one worker: in-process figures

        def reloads(result: str, want: int) -> None:
            deadline = time.monotonic() + 20
            while True:
                got = total(scrape(served.base_url), "vandamme_reloads", "vandamme_reloads_total", result=result)
                if got == want or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            assert got == want, result

        reloads("ok", 0)
        served.proc.send_signal(signal.SIGHUP)
        reloads("ok", 1)
        write_spec(specs, port, upstreams, broken=True)
        served.proc.send_signal(signal.SIGHUP)
        reloads("rejected", 1)
        # the reloaded generation records into the same metrics
        c = anthropic.Anthropic(base_url=served.base_url, api_key="k", max_retries=0, timeout=15)
        c.messages.create(model="an:claude-x", max_tokens=20, messages=USER)
        assert total(scrape(served.base_url), "vandamme_requests", "vandamme_requests_total", provider="an") == 1

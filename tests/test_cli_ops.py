"""The operator commands of the `vandamme` CLI, as real subprocesses: version, health server,
health upstream, models, and --help on every option. Real gateways (tests/harness.LiveGateway) and
real aiohttp fakes on 127.0.0.1 answer them."""
from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json

from aiohttp import web

from fakes.loopback import LoopbackServer
from fakes.openai_upstream import FakeOpenAI
from harness import Background, LiveGateway, free_port, run_cli

GOOD_KEY = "sk-good-key-1111aaaa"
BAD_KEY = "sk-bad-key-2222bbbb"
DOWN_KEY = "sk-down-key-3333cccc"
ANT_KEY = "sk-ant-good-4444dddd"
AZ_KEY = "az-key-5555eeee"
ALL_KEYS = (GOOD_KEY, BAD_KEY, DOWN_KEY, ANT_KEY, AZ_KEY)


class ModelsUpstream(LoopbackServer):
    """An upstream's model list, the way each API shape serves it:

    * ``openai``: GET /v1/models, ``Authorization: Bearer KEY``;
    * ``anthropic``: GET /v1/models, ``x-api-key: KEY`` and ``anthropic-version``;
    * ``azure``: GET /openai/models?api-version=..., ``api-key: KEY``.

    A wrong key gets a 401 whose message echoes the key it was given (as real upstreams do), so
    that a test can check the CLI never shows it. ``delay`` holds every answer back."""

    def __init__(self, shape: str, key: str | None, models=("m-one", "m-two"), delay: float = 0.0):
        super().__init__()
        self.shape, self.key, self.models, self.delay = shape, key, list(models), delay
        self.requests: list[dict] = []
        self.release: asyncio.Event | None = None

    async def __aenter__(self):
        self.release = asyncio.Event()
        return await super().__aenter__()

    async def __aexit__(self, *exc):
        self.release.set()  # a held answer ends now, so the server stops at once
        await super().__aexit__(*exc)

    @property
    def url(self) -> str:
        return self.base_url + ("/v1" if self.shape == "openai" else "")

    def routes(self, app):
        app.router.add_get("/{tail:.*}", self.answer)

    async def answer(self, request: web.Request):
        self.requests.append({"path": request.path, "query": dict(request.query), "headers": dict(request.headers)})
        if self.delay:
            try:
                await asyncio.wait_for(self.release.wait(), self.delay)
            except asyncio.TimeoutError:
                pass
        want = {"openai": "/v1/models", "anthropic": "/v1/models", "azure": "/openai/models"}[self.shape]
        if request.path != want:
            return web.json_response({"error": {"message": f"no route {request.path}"}}, status=404)
        if self.shape == "azure" and not request.query.get("api-version"):
            return web.json_response({"error": {"message": "api-version missing"}}, status=400)
        if self.shape == "anthropic" and not request.headers.get("anthropic-version"):
            return web.json_response({"type": "error", "error": {"type": "invalid_request_error",
                                                                 "message": "anthropic-version missing"}}, status=400)
        given = {"openai": (request.headers.get("Authorization") or "").removeprefix("Bearer "),
                 "anthropic": request.headers.get("x-api-key") or "",
                 "azure": request.headers.get("api-key") or ""}[self.shape]
        if self.key is not None and given != self.key:
            return web.json_response({"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                                                "message": f"Incorrect API key provided: {given}."}}, status=401)
        if self.shape == "anthropic":
            data = [{"type": "model", "id": m, "display_name": m.upper(), "created_at": "2025-01-01T00:00:00Z"}
                    for m in self.models]
            return web.json_response({"data": data, "has_more": False})
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model", "created": 1700000000}
                                                             for m in self.models]})


def write_spec(folder, text: str):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "gateway.yaml").write_text(text)
    return folder


def no_secret(*texts: str) -> None:
    for text in texts:
        for key in ALL_KEYS:
            assert key not in text, f"a key leaked: {key}"


# ---------------------------------------------------------------------------- version

def test_version_both_forms_match_the_package_metadata():
    want = importlib.metadata.version("vandamme")
    flag, cmd, js = run_cli("--version"), run_cli("version"), run_cli("version", "--json")
    assert flag.returncode == cmd.returncode == js.returncode == 0, flag.stderr + cmd.stderr + js.stderr
    assert flag.stdout == cmd.stdout == f"vandamme {want}\n"
    assert json.loads(js.stdout)["version"] == want


# ---------------------------------------------------------------------------- health server

def gateway_spec(key: str | None = GOOD_KEY):
    def spec(urls):
        keys = f"api_keys: [{key}]" if key else ""
        return f"""
version: 1
default_provider: openai
providers:
  openai: {{format: openai, base_url: "{urls['openai']}", {keys}}}
"""
    return spec


def test_health_server_against_a_running_gateway(tmp_path):
    want = importlib.metadata.version("vandamme")
    with LiveGateway(gateway_spec(), {"openai": FakeOpenAI()}, tmp_path) as gw:
        text = run_cli("health", "server", gw.base_url)
        js = run_cli("health", "server", gw.base_url + "/health", "--json")
        # the URL from a spec folder's server.port when none is given
        port = gw.base_url.rsplit(":", 1)[1]
        folder = write_spec(tmp_path / "other", f"version: 1\nserver: {{port: {port}}}\n")
        from_spec = run_cli("health", "server", "--dir", str(folder), "--json")
    assert text.returncode == 0, text.stdout + text.stderr
    assert text.stdout.startswith(f"{gw.base_url}: ok (version {want}, generation 1")
    assert "providers: 1 active of 1; default: openai" in text.stdout
    out = json.loads(js.stdout)
    assert js.returncode == 0
    assert (out["ok"], out["status"], out["version"], out["generation"], out["reasons"]) == (True, "ok", want, 1, [])
    assert json.loads(from_spec.stdout)["url"] == gw.base_url and from_spec.returncode == 0


def test_health_server_degraded_gateway_exits_1_with_the_reason(tmp_path):
    with LiveGateway(gateway_spec(key=None), {"openai": FakeOpenAI()}, tmp_path) as gw:
        r = run_cli("health", "server", gw.base_url)
        js = run_cli("health", "server", gw.base_url, "--json")
    assert r.returncode == 1 and js.returncode == 1
    assert f"{gw.base_url}: degraded" in r.stdout
    assert "degraded: default provider 'openai' is inactive: no API key: set OPENAI_API_KEY" in r.stdout
    assert json.loads(js.stdout)["reasons"] == ["no provider is active",
                                                "default provider 'openai' is inactive: no API key: set OPENAI_API_KEY"]


def test_health_server_on_a_closed_port_exits_1():
    url = f"http://127.0.0.1:{free_port()}"
    r = run_cli("health", "server", url)
    js = run_cli("health", "server", url, "--json")
    assert r.returncode == 1 and js.returncode == 1
    assert r.stdout.strip() == f"{url}: unreachable: connection refused"
    out = json.loads(js.stdout)
    assert (out["reachable"], out["ok"], out["error"]) == (False, False, "connection refused")


def test_health_server_refuses_something_that_is_not_a_vandamme(tmp_path):
    fake = ModelsUpstream("openai", None)
    with Background(fake):
        r = run_cli("health", "server", fake.base_url, "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["reachable"] is True and out["ok"] is False and "not a Vandamme" in out["error"]


# ---------------------------------------------------------------------------- health upstream

def upstream_spec(good, rejecting, ant, az, client, slow=None):
    slow_part = (f'  slow: {{format: openai, base_url: "{slow.url}", api_keys: [sk-slow-key-6666ffff]}}\n'
                 if slow else "")
    return f"""
version: 1
default_provider: good
providers:
  good: {{format: openai, base_url: "{good.url}", api_keys: [{GOOD_KEY}, sk-second-key-7777]}}
  down: {{format: openai, base_url: "http://127.0.0.1:{free_port()}/v1", api_keys: [{DOWN_KEY}]}}
  rejecting: {{format: openai, base_url: "{rejecting.url}", api_keys: [{BAD_KEY}]}}
  claude: {{format: anthropic, base_url: "{ant.url}", api_keys: [{ANT_KEY}]}}
  az: {{format: openai, api_style: azure, api_version: "2024-10-21", base_url: "{az.url}", api_keys: [{AZ_KEY}]}}
  client: {{format: anthropic, base_url: "{client.url}", api_keys: ["!PASSTHRU"]}}
  off: {{format: openai, base_url: "http://127.0.0.1:9/v1"}}
{slow_part}"""


def test_health_upstream_one_healthy_one_down_one_rejecting_the_key(tmp_path):
    good, rejecting = ModelsUpstream("openai", GOOD_KEY), ModelsUpstream("openai", "sk-the-right-one-0000")
    ant, az = ModelsUpstream("anthropic", ANT_KEY), ModelsUpstream("azure", AZ_KEY)
    client = ModelsUpstream("anthropic", "sk-some-client-key")
    slow = ModelsUpstream("openai", None, delay=30)
    with Background(good, rejecting, ant, az, client, slow):
        folder = write_spec(tmp_path / "specs", upstream_spec(good, rejecting, ant, az, client, slow))
        js = run_cli("health", "upstream", str(folder), "--json", "--timeout", "2")
        text = run_cli("health", "upstream", str(folder), "--timeout", "2")
    no_secret(js.stdout, js.stderr, text.stdout, text.stderr)
    assert js.returncode == 1 and text.returncode == 1, js.stderr + text.stderr
    out = json.loads(js.stdout)
    rows = {r["provider"]: r for r in out["providers"]}
    assert set(rows) == {"good", "down", "rejecting", "claude", "az", "client", "slow"}  # active ones only
    assert out["inactive"] == [{"provider": "off", "reason": "no API key: set OFF_API_KEY"}]
    assert (rows["good"]["result"], rows["good"]["ok"], rows["good"]["http_status"]) == ("ok", True, 200)
    assert rows["good"]["auth"] == "key 1 of 2"
    assert (rows["down"]["result"], rows["down"]["ok"], rows["down"]["detail"]) == \
        ("unreachable", False, "connection refused")
    assert (rows["rejecting"]["result"], rows["rejecting"]["http_status"]) == ("auth_rejected", 401)
    assert "Incorrect API key provided: [REDACTED]" in rows["rejecting"]["detail"]
    assert (rows["claude"]["result"], rows["az"]["result"]) == ("ok", "ok")
    assert (rows["client"]["result"], rows["client"]["ok"], rows["client"]["auth"]) == ("client_key", True, "client key")
    assert (rows["slow"]["result"], rows["slow"]["detail"]) == ("unreachable", "timed out after 2 s")
    assert all(isinstance(r["latency_ms"], float) for r in rows.values())
    # what each upstream was asked: the first key, in each API's own way
    assert good.requests[0]["headers"]["Authorization"] == f"Bearer {GOOD_KEY}"
    assert (ant.requests[0]["headers"]["x-api-key"], ant.requests[0]["headers"]["anthropic-version"]) == \
        (ANT_KEY, "2023-06-01")
    assert (az.requests[0]["path"], az.requests[0]["query"], az.requests[0]["headers"]["api-key"]) == \
        ("/openai/models", {"api-version": "2024-10-21"}, AZ_KEY)
    assert "x-api-key" not in client.requests[0]["headers"] and "Authorization" not in client.requests[0]["headers"]
    # the table: one line per provider, its result in words
    lines = {ln.split()[0]: ln for ln in text.stdout.splitlines()[1:] if ln.strip()}
    assert text.stdout.splitlines()[0].split() == ["PROVIDER", "RESULT", "LATENCY", "AUTH", "CHECKED", "DETAIL"]
    assert " ok " in lines["good"] and "unreachable" in lines["down"] and "auth rejected" in lines["rejecting"]
    assert "client key" in lines["client"]
    assert "7 checked: 4 healthy, 3 failing" in text.stdout
    assert "1 inactive, not checked: off" in text.stdout


def test_health_upstream_all_healthy_exits_0_with_keys_from_the_folders_env_file(tmp_path):
    good = ModelsUpstream("openai", GOOD_KEY)
    with Background(good):
        folder = write_spec(tmp_path / "specs", f"""
version: 1
default_provider: good
providers:
  good: {{format: openai, base_url: "{good.url}"}}
""")
        (folder / ".env").write_text(f"# keys\nGOOD_API_KEY='{GOOD_KEY}'\n")
        r = run_cli("health", "upstream", str(folder), "--json")
        without = run_cli("health", "upstream", str(folder), "--json", "--env-file", "/nonexistent/.env")
    assert r.returncode == 0, r.stdout + r.stderr
    no_secret(r.stdout, r.stderr)
    assert [(p["provider"], p["result"]) for p in json.loads(r.stdout)["providers"]] == [("good", "ok")]
    assert without.returncode == 1 and "env file not found" in without.stderr


def test_health_upstream_with_an_invalid_spec_prints_its_errors(tmp_path):
    folder = write_spec(tmp_path / "specs", "version: 1\nprovders: {}\n")
    r = run_cli("health", "upstream", str(folder))
    assert r.returncode == 1
    assert "did you mean 'providers'" in r.stderr


# ---------------------------------------------------------------------------- models

def test_models_every_active_provider_and_one(tmp_path):
    oa = ModelsUpstream("openai", GOOD_KEY, models=["gpt-x", "gpt-y"])
    ant = ModelsUpstream("anthropic", ANT_KEY, models=["claude-z"])
    az = ModelsUpstream("azure", AZ_KEY, models=["gpt-az"])  # GET /openai/models?api-version=, api-key
    with Background(oa, ant, az):
        folder = write_spec(tmp_path / "specs", f"""
version: 1
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{oa.url}", api_keys: [{GOOD_KEY}]}}
  ant: {{format: anthropic, base_url: "{ant.url}", api_keys: [{ANT_KEY}]}}
  az: {{format: openai, api_style: azure, api_version: "2024-10-21", base_url: "{az.url}", api_keys: [{AZ_KEY}],
        models: [from-spec-not-upstream]}}
  gone: {{format: openai, base_url: "http://127.0.0.1:{free_port()}/v1", api_keys: [{DOWN_KEY}],
          models: [listed-in-spec]}}
  off: {{format: openai, base_url: "http://127.0.0.1:9/v1", models: [never]}}
""")
        js = run_cli("models", "--dir", str(folder), "--json")
        text = run_cli("models", "--dir", str(folder))
        one = run_cli("models", "ant", "--dir", str(folder), "--json")
        unknown = run_cli("models", "nope", "--dir", str(folder))
        inactive = run_cli("models", "off", "--dir", str(folder))
    no_secret(js.stdout, js.stderr, text.stdout, text.stderr)
    assert js.returncode == 0 and text.returncode == 0 and one.returncode == 0, js.stderr + text.stderr
    out = json.loads(js.stdout)
    assert [(m["id"], m["source"]) for m in out["data"]] == [
        ("oa:gpt-x", "upstream"), ("oa:gpt-y", "upstream"), ("ant:claude-z", "upstream"),
        ("az:gpt-az", "upstream"), ("gone:listed-in-spec", "spec")]
    assert {r["path"] for r in az.requests} == {"/openai/models"}
    assert {r["query"].get("api-version") for r in az.requests} == {"2024-10-21"}
    assert out["providers"]["gone"]["note"] == "its upstream model list could not be read"
    assert "off" not in out["providers"]
    assert [m["id"] for m in json.loads(one.stdout)["data"]] == ["ant:claude-z"]
    assert text.stdout.splitlines()[0].split() == ["PROVIDER", "MODEL", "NAME", "SOURCE"]
    assert any(ln.split()[:2] == ["ant", "ant:claude-z"] and "CLAUDE-Z" in ln for ln in text.stdout.splitlines())
    assert "gone: its upstream model list could not be read; the spec's models: list shown" in text.stdout
    assert unknown.returncode == 1 and "no provider 'nope'" in unknown.stderr
    assert inactive.returncode == 1 and "provider 'off' is inactive: no API key: set OFF_API_KEY" in inactive.stderr


# ---------------------------------------------------------------------------- --help

def _all_parsers(ap: argparse.ArgumentParser, prefix=("vandamme",)):
    yield prefix, ap
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, (*prefix, name))


def test_help_describes_every_option_of_every_command():
    from vandamme.engine.cli import parser

    missing = []
    for path, ap in _all_parsers(parser()):
        for action in ap._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if not action.help:
                missing.append(f"{' '.join(path)} {action.option_strings or action.dest}")
    assert not missing, missing
    for args in (["--help"], ["health", "upstream", "--help"], ["config", "setup", "--help"],
                 ["wrap", "--help"], ["models", "--help"]):
        r = run_cli(*args)
        assert r.returncode == 0 and "usage: vandamme" in r.stdout, r.stderr


def test_progress_line_only_on_a_terminal():
    import io
    import time

    from vandamme.engine.cli_output import Progress

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Terminal(), io.StringIO()
    with Progress("checking 3 providers", delay=0, interval=0.01, stream=tty) as p, \
            Progress("checking 3 providers", delay=0, interval=0.01, stream=pipe):
        p.update("1/3 answered")
        deadline = time.monotonic() + 10
        while "1/3 answered" not in tty.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "checking 3 providers (1/3 answered)" in tty.getvalue()
    assert tty.getvalue().endswith("\r\x1b[2K")  # erased when done
    assert pipe.getvalue() == ""  # nothing in a pipe or a file

"""deploy/compose/: the scale-out stack (gateways behind nginx, OpenTelemetry Collector, Jaeger,
Prometheus, Redis) is *validated*, not run: no container engine runs on these machines and no
image registry is reachable. What is checked:

* compose.yaml against the Compose Specification's JSON schema (vendored in tests/data/, see its
  README for source and licence), before and after ${VAR:-default} interpolation;
* the wiring: every host name the gateways are given is a service of the stack, on the port that
  service listens on; the stop grace is above the gateway's drain deadline;
* every file the stack mounts exists and parses: the collector and Prometheus configurations
  (YAML, checked for the keys that matter), the spec folder (`vandamme validate`), the nginx
  configuration (`nginx -t` when nginx is installed);
* .env.example is accepted by the gateway's environment overlays.

One part does run here: the nginx configuration, with Debian's nginx in front of two real
gateways (tests/harness.LiveGateway, each with a fake OpenAI upstream) on 127.0.0.1, standing in
for two replicas that Docker's DNS would return for `gateway`.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import anthropic
import httpx
import jsonschema
import pytest
from ruamel.yaml import YAML

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import ROOT, LiveGateway, free_port, run_cli

COMPOSE_DIR = ROOT / "deploy" / "compose"
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
SCHEMA_FILE = ROOT / "tests" / "data" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def _yaml(path: Path):
    return YAML(typ="safe").load(path.read_text())


def _interpolate(node, missing: list):
    """Compose's ${NAME:-default} / ${NAME-default} / ${NAME}, with every variable unset (the
    defaults are what a fresh checkout runs with); names without a default go to ``missing``."""
    if isinstance(node, dict):
        return {k: _interpolate(v, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, missing) for v in node]
    if isinstance(node, str):
        def sub(m):
            if m.group(2) is None:
                missing.append(m.group(1))
                return ""
            return m.group(2)
        return _VAR.sub(sub, node)
    return node


def _drain_timeout_default() -> float:
    schema = json.loads((ROOT / "schemas" / "vandamme.schema.json").read_text())
    return float(schema["properties"]["server"]["properties"]["drain_timeout"]["default"])


def _seconds(duration: str) -> float:
    total, units = 0.0, {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts and "".join(a + b for a, b in parts) == duration, f"not a compose duration: {duration}"
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


@pytest.fixture(scope="module")
def compose() -> dict:
    return _yaml(COMPOSE_FILE)


@pytest.fixture(scope="module")
def interpolated(compose) -> dict:
    missing: list = []
    out = _interpolate(compose, missing)
    assert not missing, f"variables without a default in compose.yaml: {missing}"
    return out


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    raw = SCHEMA_FILE.read_bytes()
    assert hashlib.sha256(raw).hexdigest() == SCHEMA_SHA256, "tests/data/compose-spec.json changed: update its README"
    schema = json.loads(raw)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _errors(validator, doc) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_matches_the_compose_specification(validator, compose, interpolated):
    assert _errors(validator, compose) == []
    assert _errors(validator, interpolated) == []


def test_the_schema_is_not_vacuous(validator, compose):
    bad = json.loads(json.dumps(compose))
    bad["services"]["gateway"]["replicas_typo"] = 3
    bad["services"]["nginx"]["ports"] = {"8082": 8082}
    errors = _errors(validator, bad)
    assert any("replicas_typo" in e for e in errors), errors
    assert any(e.startswith("services/nginx/ports") for e in errors), errors


def test_the_stack_has_every_part(interpolated):
    services = interpolated["services"]
    assert {"gateway", "nginx", "otel-collector", "jaeger", "prometheus", "redis"} <= set(services)
    gateway = services["gateway"]
    replicas = int(gateway["deploy"]["replicas"])
    assert replicas >= 2, "the stack is about several replicas"
    # Replicas cannot share a container name or a published host port.
    assert "container_name" not in gateway and "ports" not in gateway
    assert services["jaeger"]["image"].startswith("jaegertracing/all-in-one:")
    assert services["jaeger"]["environment"]["COLLECTOR_OTLP_ENABLED"] == "true"
    for name, service in services.items():
        assert not service["image"].endswith(":latest") or name == "gateway", f"{name}: pin the image"


def test_gateways_point_at_services_of_the_stack(interpolated):
    services = interpolated["services"]
    env = services["gateway"]["environment"]
    assert env["VDM_REDIS_URL"] == "redis://redis:6379/0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert env["HOST"] == "0.0.0.0", "specs/00-server.yaml binds 127.0.0.1, unreachable from nginx"
    assert "6379" in services["redis"]["expose"]
    assert "4318" in services["otel-collector"]["expose"]
    assert set(services["gateway"]["depends_on"]) == {"redis", "otel-collector"}
    # The keys come from .env, which is not committed; .env.example documents it.
    assert [e["path"] for e in services["gateway"]["env_file"]] == [".env"]
    assert (COMPOSE_DIR / ".env.example").is_file()


def test_stop_grace_is_above_the_drain_deadline(interpolated):
    grace = _seconds(interpolated["services"]["gateway"]["stop_grace_period"])
    assert grace > _drain_timeout_default() + 5, "SIGKILL would cut requests the drain lets finish"


def _bind_mounts(interpolated):
    for name, service in interpolated["services"].items():
        for volume in service.get("volumes", []):
            if isinstance(volume, dict) and volume.get("type") == "bind":
                yield name, (COMPOSE_DIR / volume["source"]).resolve(), volume["target"]
            elif isinstance(volume, str) and volume.split(":", 1)[0].startswith((".", "/")):
                yield name, (COMPOSE_DIR / volume.split(":", 1)[0]).resolve(), volume.split(":")[1]


def test_every_mounted_file_exists_and_parses(interpolated):
    mounts = list(_bind_mounts(interpolated))
    assert {name for name, _, _ in mounts} >= {"gateway", "nginx", "otel-collector", "prometheus"}
    for name, source, target in mounts:
        assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
        if source.suffix in (".yaml", ".yml"):
            assert isinstance(_yaml(source), dict), f"{name}: {source} is not a YAML mapping"
        elif source.is_dir():
            # The gateway's spec folder: the same check `vandamme run` does before serving.
            assert list(source.glob("*.yaml")), f"{name}: no spec in {source}"
            result = run_cli("validate", str(source))
            assert result.returncode == 0, result.stdout + result.stderr
        else:
            assert source.name == "nginx.conf", f"{name}: {source}: no check for this file"


def _mounted(interpolated, service: str, target: str) -> Path:
    for name, source, tgt in _bind_mounts(interpolated):
        if name == service and tgt == target:
            return source
    raise AssertionError(f"{service} mounts nothing at {target}")


def test_collector_receives_otlp_and_exports_to_jaeger(interpolated):
    service = interpolated["services"]["otel-collector"]
    config_arg = next(a for a in service["command"] if a.startswith("--config="))
    config = _yaml(_mounted(interpolated, "otel-collector", config_arg.split("=", 1)[1]))
    http = config["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert http.endswith(":4318"), "the gateways send OTLP/HTTP to port 4318"
    pipelines = config["service"]["pipelines"]
    traces = pipelines["traces"]
    assert "otlp" in traces["receivers"]
    # Every component a pipeline names is declared (the collector refuses to start otherwise).
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in (config.get(kind) or {}), f"{kind}: {component} is not declared"
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]
    exporters = {name: config["exporters"][name] for name in traces["exporters"]}
    assert "debug" in exporters
    jaeger = [e for name, e in exporters.items() if name.split("/")[0] in ("otlp", "otlp_grpc")]
    assert jaeger and jaeger[0]["endpoint"] == "jaeger:4317", "traces go to Jaeger's OTLP/gRPC port"


def test_prometheus_scrapes_every_gateway_replica(interpolated):
    config = _yaml(_mounted(interpolated, "prometheus", "/etc/prometheus/prometheus.yml"))
    jobs = [j for j in config["scrape_configs"]
            if any("gateway" in sd.get("names", []) for sd in j.get("dns_sd_configs", []))]
    assert len(jobs) == 1, "one job discovers the gateway replicas through the compose service's DNS name"
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    sd = job["dns_sd_configs"][0]
    assert sd["type"] == "A" and sd["port"] == int(interpolated["services"]["gateway"]["environment"]["PORT"])
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run([promtool, "check", "config", "--syntax-only",
                                 str(_mounted(interpolated, "prometheus", "/etc/prometheus/prometheus.yml"))],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr


def test_nginx_balances_over_the_gateway_service(interpolated):
    conf = _mounted(interpolated, "nginx", "/etc/nginx/nginx.conf").read_text()
    port = interpolated["services"]["gateway"]["environment"]["PORT"]
    servers = re.findall(r"^\s*server\s+([^\s;{]+)[^;{]*;", conf, re.M)
    assert servers and set(servers) == {f"gateway:{port}"}, servers
    assert re.search(r"location\s+/\s*\{\s*proxy_pass\s+http://vandamme;", conf)
    assert re.search(r"proxy_buffering\s+off;", conf), "SSE streams must not be buffered"
    published = interpolated["services"]["nginx"]["ports"][0]
    assert published.endswith(":8082") and re.search(r"listen\s+8082;", conf)


def _nginx() -> str:
    nginx = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if not nginx:
        pytest.skip("nginx is not installed (Debian's nginx-light or nginx): the nginx configuration "
                    "was only read, not checked by nginx")
    return nginx


def test_nginx_accepts_its_configuration(interpolated, tmp_path):
    nginx = _nginx()
    conf = _mounted(interpolated, "nginx", "/etc/nginx/nginx.conf").read_text()
    # `nginx -t` resolves upstream host names, and `gateway` exists only in the stack's network
    # (Docker's DNS). The copy tested here names 127.0.0.1 instead; nothing else is changed.
    copy, count = re.subn(r"(^\s*server\s+)gateway:", r"\g<1>127.0.0.1:", conf, flags=re.M)
    assert count == len(re.findall(r"^\s*server\s+[^\s;{]+[^;{]*;", conf, re.M))
    (tmp_path / "nginx.conf").write_text(copy)
    result = subprocess.run([nginx, "-t", "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


def _env_file(path: Path) -> dict[str, str]:
    env = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"{path.name}:{number}: not NAME=VALUE"
        env[name] = value
    return env


def test_env_example_is_accepted_by_the_gateway():
    env = _env_file(COMPOSE_DIR / ".env.example")
    assert "OPENAI_API_KEY" in env and "VDM_API_KEYS" in env
    # Not a variable the stack sets itself: the compose environment would silently win.
    compose_env = _yaml(COMPOSE_FILE)["services"]["gateway"]["environment"]
    assert not set(env) & set(compose_env)
    # As copied (empty values) and once filled in, the shipped specs load with it.
    for values in (env, {**env, "OPENAI_API_KEY": "sk-test-1 sk-test-2",
                         "VDM_API_KEYS": "team:0123456789abcdef0123"}):
        result = run_cli("validate", str(ROOT / "specs"), env=values)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "sk-test" not in result.stdout + result.stderr


GATEWAY_SPEC = """
version: 1
server: {{max_retries: 0}}
default_provider: openai
providers:
  openai:
    format: openai
    base_url: "{url}"
    api_keys: [sk-replica-0123456789]
    aliases: {{haiku: gpt-4o-mini, sonnet: gpt-4o, opus: gpt-4o}}
"""


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {proc.stderr.read().decode(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nginx is not listening on {port} after {seconds} s")


def test_nginx_serves_two_replicas(interpolated, tmp_path):
    """The shipped nginx.conf, run: requests and SSE streams through it reach both replicas. The
    copy run here differs only where the stack's network cannot be had: each `server gateway:8082`
    line becomes the two replicas' loopback addresses (what Docker's DNS returns for `gateway`),
    nginx listens on a free loopback port, and its pid and temporary files go to a temp folder."""
    nginx = _nginx()
    conf = _mounted(interpolated, "nginx", "/etc/nginx/nginx.conf").read_text()
    fakes = [FakeOpenAI(), FakeOpenAI()]
    with LiveGateway(lambda u: GATEWAY_SPEC.format(url=u["openai"]), {"openai": fakes[0]},
                     tmp_path / "a") as one, \
         LiveGateway(lambda u: GATEWAY_SPEC.format(url=u["openai"]), {"openai": fakes[1]},
                     tmp_path / "b") as two:
        replicas = [one.base_url.rsplit(":", 1)[1], two.base_url.rsplit(":", 1)[1]]
        port = free_port()
        copy, n = re.subn(r"^(\s*)server\s+gateway:\d+([^;]*);",
                          lambda m: "".join(f"{m.group(1)}server 127.0.0.1:{p}{m.group(2)};\n" for p in replicas),
                          conf, flags=re.M)
        assert n >= 1
        copy, n = re.subn(r"listen\s+8082;", f"listen 127.0.0.1:{port};", copy)
        assert n == 1
        copy, n = re.subn(r"^pid\s+[^;]+;", f"pid {tmp_path}/nginx.pid;", copy, flags=re.M)
        assert n == 1
        temp = "".join(f"    {kind}_temp_path {tmp_path}/{kind};\n"
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        copy = copy.replace("http {\n", "http {\n" + temp, 1)
        (tmp_path / "nginx.conf").write_text(copy)
        proc = subprocess.Popen([nginx, "-c", str(tmp_path / "nginx.conf"), "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            _wait_for_port(port, proc)
            base = f"http://127.0.0.1:{port}"
            client = anthropic.Anthropic(base_url=base, api_key="client", max_retries=0, timeout=15)
            for n, fake in enumerate(fakes):
                fake.default = Reply(text=f"replica {n}", random_slices=3)
            answers = []
            for i in range(6):
                message = client.messages.create(model="claude-3-5-haiku-latest", max_tokens=50,
                                                 messages=[{"role": "user", "content": f"q{i}"}])
                answers.append(message.content[0].text)
            with client.messages.stream(model="sonnet", max_tokens=50,
                                        messages=[{"role": "user", "content": "stream"}]) as stream:
                kinds = [event.type for event in stream]
                final = stream.get_final_message()
            assert final.content[0].text in ("replica 0", "replica 1")
            assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
            # Both replicas served (least_conn takes equally idle servers in turn).
            assert set(answers) == {"replica 0", "replica 1"}, answers
            counts = [sum(r["path"].endswith("/chat/completions") for r in f.requests) for f in fakes]
            assert sum(counts) == 7, counts
            models = [r["json"]["model"] for f in fakes for r in f.requests if r["json"]]
            assert sorted(models) == ["gpt-4o"] + ["gpt-4o-mini"] * 6, models
            with httpx.Client(base_url=base, timeout=10) as http:
                assert http.get("/health").json()["status"] in ("ok", "degraded")
                assert http.get("/metrics").status_code == 404
                assert http.get("/nginx-health").text == "ok\n"
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

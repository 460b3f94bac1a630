"""The container image (deploy/docker/Dockerfile), run with podman as an operator would run it.

``make image`` builds ``localhost/vandamme:test`` (``make test`` does it when podman is present;
``make test-image`` also installs podman, runc and debootstrap and runs this file alone): a Debian
base made by debootstrap, ``podman build --isolation chroot`` offline from a wheelhouse. Here the
image runs as in Kubernetes — read-only root filesystem with a tmpfs ``/tmp``, no capabilities, no
new privileges, the specs mounted read-only over ``/app/specs`` — on the host network, in front of a
fake OpenAI upstream on 127.0.0.1, and is asked for ``/health``, a converted request and a stream
through the official anthropic SDK; then who it runs as, its HEALTHCHECK, and SIGTERM with a
stream in flight (``podman stop -t 45``: the stream finishes, the process exits 0 by itself).

Skips with the reason when podman or the image is missing. Containers run with Debian's runc and
the cgroupfs manager (crun and systemd fail on these machines) and a CONTAINERS_CONF without
default ulimits (the sandbox refuses them): docs/deploy.md, "Image".
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path

import urllib.error
import urllib.request

import anthropic
import pytest

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import Background, free_port

ROOT = Path(__file__).resolve().parent.parent
IMAGE = os.environ.get("VDM_TEST_IMAGE", "localhost/vandamme:test")
PODMAN = shutil.which("podman")
KEY = "sk-image-test-" + uuid.uuid4().hex  # the provider key: must reach the fake, never the logs

pytestmark = pytest.mark.skipif(
    PODMAN is None,
    reason="podman not found: `make test-image` installs podman, runc and debootstrap, builds the image "
           "and runs this test")


def podman_env() -> dict:
    env = dict(os.environ)
    if not env.get("CONTAINERS_CONF"):
        conf = Path(tempfile.gettempdir()) / "vandamme-test-containers.conf"
        conf.write_text("[containers]\ndefault_ulimits = []\n")
        env["CONTAINERS_CONF"] = str(conf)
    return env


def podman(*args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
    """``podman --runtime runc --cgroup-manager cgroupfs ARGS``."""
    proc = subprocess.run([PODMAN, "--runtime", "runc", "--cgroup-manager", "cgroupfs", *args],
                          capture_output=True, text=True, timeout=timeout, env=podman_env())
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


class Upstream(Background):
    """A FakeOpenAI (requiring KEY) on an event loop in a background thread of this process."""

    def __init__(self):
        self.fake = FakeOpenAI(api_key=KEY)
        super().__init__(self.fake)

    def enqueue(self, reply: Reply) -> None:
        asyncio.run_coroutine_threadsafe(self._enqueue(reply), self.loop).result(5)

    async def _enqueue(self, reply: Reply) -> None:
        self.fake.enqueue(reply)


@pytest.fixture(scope="module")
def image() -> dict:
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.skip(f"image {IMAGE} not built: `make image` builds it (make test does when podman is "
                    "present; see its output for why it did not), `make test-image` builds and runs this")
    return json.loads(podman("image", "inspect", IMAGE).stdout)[0]


class Gateway:
    def __init__(self, name: str, port: int, upstream: Upstream):
        self.name, self.port, self.upstream = name, port, upstream
        self.base_url = f"http://127.0.0.1:{port}"
        self.client = anthropic.Anthropic(base_url=self.base_url, api_key="client-key", max_retries=0,
                                          timeout=30)

    def health(self) -> tuple[int, dict]:
        """GET /health from this process (never through a proxy)."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(self.base_url + "/health", timeout=2) as r:
            return r.status, json.loads(r.read())

    def state(self) -> dict:
        return json.loads(podman("inspect", "--type", "container", self.name).stdout)[0]["State"]

    def logs(self) -> str:
        p = podman("logs", self.name, check=False)
        return p.stdout + p.stderr


def spec_folder(port: int, upstream_url: str) -> Path:
    """The shipped specs plus one file pointing the openai provider at the fake: a folder the
    container's user (uid 10001) can read, mounted read-only over /app/specs."""
    folder = Path(tempfile.mkdtemp(prefix="vandamme-image-specs-"))
    for f in sorted((ROOT / "specs").glob("*.yaml")):
        shutil.copy(f, folder / f.name)
    (folder / "90-image-test.yaml").write_text(
        f"server:\n  port: {port}\n"
        f"providers:\n  openai:\n    base_url: {upstream_url}\n")
    folder.chmod(0o755)
    for f in folder.iterdir():
        f.chmod(0o644)
    return folder


@pytest.fixture(scope="module")
def gateway(image):
    port = free_port()
    name = f"vandamme-image-test-{uuid.uuid4().hex[:8]}"
    with Upstream() as upstream:
        specs = spec_folder(port, upstream.fake.base_url)
        try:
            podman("run", "-d", "--name", name, "--network", "host",
                   "--read-only", "--read-only-tmpfs=false", "--tmpfs", "/tmp",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                   "-v", f"{specs}:/app/specs:ro",
                   "-e", f"PORT={port}", "-e", f"OPENAI_API_KEY={KEY}", IMAGE)
            gw = Gateway(name, port, upstream)
            deadline = time.monotonic() + 60
            while True:
                try:
                    if gw.health()[0] == 200:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                state = gw.state()
                if not state["Running"] or time.monotonic() > deadline:
                    pytest.fail(f"the container did not answer /health (running={state['Running']}, "
                                f"exit code {state['ExitCode']}):\n{gw.logs()}")
                time.sleep(0.25)
            yield gw
        finally:
            podman("rm", "--force", "--time", "0", name, check=False)
            shutil.rmtree(specs, ignore_errors=True)


def test_image_metadata(image):
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] + config["Cmd"] == ["vandamme", "run", "/app/specs"]
    assert "8082/tcp" in config["ExposedPorts"]
    assert config["StopSignal"] in ("SIGTERM", "15")
    env = dict(e.split("=", 1) for e in config["Env"])
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8082" and env["PYTHONDONTWRITEBYTECODE"] == "1"
    health = image.get("Healthcheck") or config.get("Healthcheck")
    assert health and health["Test"] == ["CMD", "python3", "/app/healthcheck.py"]
    # The build's inputs stayed in the builder stage.
    history = podman("history", "--no-trunc", "--format", "{{.CreatedBy}}", IMAGE).stdout
    assert "wheelhouse" not in history.lower() and "WHEELHOUSE" not in json.dumps(config)
    files = podman("run", "--rm", "--network", "none", "--entrypoint", "sh", IMAGE, "-c",
                   "ls /app/specs; test ! -e /src && test ! -e /wheels && echo clean").stdout.split()
    assert files == sorted(p.name for p in (ROOT / "specs").glob("*.yaml")) + ["clean"]


def test_health_and_converted_requests(gateway):
    status, health = gateway.health()
    assert status == 200 and health["status"] == "ok"
    gateway.upstream.enqueue(Reply(text="Hello from the fake upstream"))
    msg = gateway.client.messages.create(model="claude-sonnet-4-5", max_tokens=64,
                                         messages=[{"role": "user", "content": "hi"}])
    assert msg.type == "message" and msg.role == "assistant"
    assert msg.content[0].text == "Hello from the fake upstream"
    sent = gateway.upstream.fake.requests[-1]
    assert sent["json"]["model"] == "gpt-4o"  # the sonnet tier of the openai provider (specs/20-aliases.yaml)
    assert sent["headers"]["Authorization"] == f"Bearer {KEY}"

    gateway.upstream.enqueue(Reply(text="streamed answer"))
    with gateway.client.messages.stream(model="claude-3-5-haiku-latest", max_tokens=64,
                                        messages=[{"role": "user", "content": "hi"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed answer" and final.stop_reason == "end_turn"
    assert gateway.upstream.fake.requests[-1]["json"]["model"] == "gpt-4o-mini"


def test_runs_as_non_root_on_a_read_only_root(gateway):
    assert podman("exec", gateway.name, "id", "-u").stdout.strip() == "10001"
    # the gateway itself (the container's pid 1), seen from the host
    status = Path(f"/proc/{gateway.state()['Pid']}/status").read_text()
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == ["10001"] * 4
    cmdline = Path(f"/proc/{gateway.state()['Pid']}/cmdline").read_bytes().split(b"\0")
    assert [b"run", b"/app/specs"] == cmdline[-3:-1] and cmdline[1].endswith(b"/vandamme")
    denied = podman("exec", gateway.name, "touch", "/app/x", check=False)
    assert denied.returncode != 0 and "read-only file system" in denied.stderr.lower()
    assert podman("exec", gateway.name, "touch", "/tmp/x", check=False).returncode == 0


def test_healthcheck(gateway):
    run = podman("healthcheck", "run", gateway.name, check=False)
    if run.returncode == 125:
        pytest.skip(f"podman healthcheck run does not work here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stdout + run.stderr


def test_sigterm_drains_and_exits_cleanly(gateway):
    """Last: stops the module's container. A stream in flight when SIGTERM arrives finishes."""
    gateway.upstream.enqueue(Reply(text="one two three four five six seven eight", delay=0.4,
                                   stream=True))
    events: list[str] = []
    first = threading.Event()
    errors: list[BaseException] = []

    def consume() -> None:
        try:
            with gateway.client.messages.stream(model="claude-sonnet-4-5", max_tokens=64,
                                                messages=[{"role": "user", "content": "count"}]) as s:
                for event in s:
                    events.append(event.type)
                    if event.type == "content_block_delta":
                        first.set()
        except BaseException as exc:  # noqa: BLE001 - reported by the test below
            errors.append(exc)
        finally:
            first.set()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    assert first.wait(30), "no stream event before the stop"
    stop = podman("stop", "--time", "45", gateway.name, timeout=90)
    reader.join(30)
    assert not errors, errors
    assert events[-1] == "message_stop", events
    state = gateway.state()
    # exit code 0: the process drained and exited by itself (a SIGKILL at the grace's end is 137)
    assert not state["Running"] and state["ExitCode"] == 0, (stop.stderr, gateway.logs())
    logs = gateway.logs()
    assert "vandamme listening on http://0.0.0.0:" in logs
    assert "Traceback" not in logs and KEY not in logs

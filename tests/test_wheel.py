"""The wheel: built from the repository, installed into a fresh virtual environment, and used from
an unrelated directory — `vandamme validate` and a request served through `vandamme run`, both
with the specs and schema that ship inside the package."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import anthropic
import httpx
import pytest

from fakes.openai_upstream import FakeOpenAI, Reply
from harness import ROOT, Background, free_port


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-build-isolation: the build uses this environment's setuptools (no registry needed)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    # setuptools warned three times per install about the license form; it must not any more
    assert "license" not in (r.stdout + r.stderr).lower(), r.stdout + r.stderr
    (path,) = out.glob("vandamme-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(tmp_path_factory, wheel) -> Path:
    """A fresh venv with the wheel installed. Its dependencies come from this test environment's
    site-packages (a path entry in a .pth file: the registry is not needed, and that folder's own
    .pth files — this checkout's editable install among them — are not processed), so the only
    Vandamme it can import is the wheel's."""
    env_dir = tmp_path_factory.mktemp("venv") / "fresh"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=120)
    py = env_dir / "bin" / "python"
    site = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    deps = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    Path(site, "zz_test_dependencies.pth").write_text(deps + "\n")
    r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return env_dir


def clean_env(tmp: Path, **extra) -> dict:
    """No key, no spec folder variable, a HOME without ~/.config/vandamme, nothing of this checkout."""
    env = {k: v for k, v in os.environ.items()
           if not k.endswith("_API_KEY") and not k.endswith("_BASE_URL") and k not in ("PYTHONPATH", "VDM_SPECS")}
    env.update(HOME=str(tmp), XDG_CONFIG_HOME=str(tmp / ".config"), **extra)
    return env


def test_the_wheel_adds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names} == {"vandamme", wheel.name.split("-py")[0] + ".dist-info"}
    assert "vandamme/schemas/vandamme.schema.json" in names
    assert {"vandamme/default_specs/" + p.name for p in (ROOT / "specs").glob("*.yaml")} <= set(names)
    assert any(n.startswith("vandamme/engine/dashboard_static/") for n in names)
    entry_points = zipfile.ZipFile(wheel).read(wheel.name.split("-py")[0] + ".dist-info/entry_points.txt").decode()
    assert "vandamme = vandamme.engine.cli:main" in entry_points


def test_installed_package_is_the_wheel(venv, tmp_path):
    py = venv / "bin" / "python"
    r = subprocess.run([str(py), "-c", "import vandamme, vandamme.engine.server; print(vandamme.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, env=clean_env(tmp_path), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith(str(venv)), r.stdout
    for generic in ("engine", "transforms"):
        r = subprocess.run([str(py), "-c", f"import {generic}"], capture_output=True, text=True, cwd=tmp_path,
                           env=clean_env(tmp_path), timeout=60)
        assert r.returncode != 0, f"the wheel installed a top-level '{generic}'"


def test_validate_from_an_unrelated_directory(venv, tmp_path):
    vandamme = venv / "bin" / "vandamme"
    r = subprocess.run([str(vandamme), "validate"], capture_output=True, text=True, cwd=tmp_path,
                       env=clean_env(tmp_path, OPENAI_API_KEY="sk-wheel-test-key-0001"), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "valid" in r.stdout and "Traceback" not in r.stderr
    r = subprocess.run([str(vandamme), "--version"], capture_output=True, text=True, cwd=tmp_path,
                       env=clean_env(tmp_path), timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("vandamme "), r.stdout + r.stderr


def test_run_serves_the_packaged_specs(venv, tmp_path):
    fake = FakeOpenAI()
    fake.default = Reply(text="served by the wheel")
    with Background(fake):
        serve_through_the_wheel(venv, tmp_path, fake)


def serve_through_the_wheel(venv: Path, tmp_path: Path, fake: FakeOpenAI) -> None:
    port = free_port()
    env = clean_env(tmp_path, OPENAI_API_KEY="sk-wheel-test-key-0001", OPENAI_BASE_URL=fake.base_url,
                    PORT=str(port))
    proc = subprocess.Popen([str(venv / "bin" / "vandamme"), "run"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the installed gateway did not start"
            time.sleep(0.2)
        client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{port}", api_key="x", max_retries=0, timeout=20)
        msg = client.messages.create(model="claude-3-5-haiku-20241022", max_tokens=50,
                                     messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "served by the wheel"
        # Claude Code's model name went through the packaged aliases to an OpenAI model
        assert fake.requests[-1]["json"]["model"].startswith("gpt-")
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()

"""The `vandamme` command line, run as a real subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VANDAMME = [sys.executable, "-m", "engine.cli"]


def run(*args, env=None, cwd=ROOT):
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e.update(env or {})
    return subprocess.run([*VANDAMME, *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=60)


def test_validate_default_specs():
    r = run("validate", "specs/")
    assert r.returncode == 0, r.stderr
    assert "valid" in r.stdout


def test_validate_typo_names_position_and_suggestion(tmp_path):
    (tmp_path / "a.yaml").write_text("version: 1\nprovders:\n  openai: {format: openai}\n")
    r = run("validate", str(tmp_path))
    assert r.returncode == 1
    assert f"{tmp_path}/a.yaml:2:1: provders: " in r.stderr or "a.yaml:2:1: provders" in r.stderr
    assert "did you mean 'providers'" in r.stderr


def test_validate_json_format(tmp_path):
    (tmp_path / "a.yaml").write_text("version: 1\nproviders:\n  x: {format: opanai, base_url: 'http://h'}\n")
    r = run("validate", str(tmp_path), "--format", "json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["valid"] is False
    (err,) = [e for e in out["errors"] if e["path"] == "providers.x.format"]
    assert err["line"] == 3 and "opanai" in err["message"]


def test_usage_error_exits_2():
    assert run("validate").returncode == 2
    assert run("nonsense").returncode == 2


def test_config_show_masks_env_keys():
    r = run("config", "show", "specs/", env={"OPENAI_API_KEY": "sk-first-key-aaaa1111 sk-second-key-bbbb2222"})
    assert r.returncode == 0, r.stderr
    assert "sk-first-key" not in r.stdout and "sk-second-key" not in r.stdout
    lines = [ln for ln in r.stdout.splitlines() if "env:OPENAI_API_KEY" in ln]
    assert len(lines) >= 2
    assert any("1111" in ln for ln in lines) and any("2222" in ln for ln in lines)


def test_graph_text_and_dot():
    r = run("graph", "specs/", env={"OPENAI_API_KEY": "k"})
    assert r.returncode == 0, r.stderr
    assert "front: parse -> validate -> resolve_target -> dispatch" in r.stdout
    assert "anthropic_to_openai -> upstream -> openai_to_anthropic" in r.stdout
    r = run("graph", "specs/", "--format", "dot")
    assert r.returncode == 0 and r.stdout.startswith("digraph vandamme {")

"""The `vandamme` command line, run as a real subprocess."""
import json
import os
import subprocess
import sys

from harness import ROOT, run_cli

VANDAMME = [sys.executable, "-m", "vandamme.engine.cli"]


run = run_cli


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
    assert run("validate", "--format", "xml").returncode == 2
    assert run("nonsense").returncode == 2


def test_without_a_folder_the_packaged_specs_are_used(tmp_path):
    """No folder, no ./specs, no $VDM_SPECS, no `config setup` folder: the specs in the package."""
    r = run_cli("validate", cwd=tmp_path, env={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c"),
                                               "OPENAI_API_KEY": "sk-packaged-specs-0001"})
    assert r.returncode == 0, r.stderr
    assert "default_specs: valid" in r.stdout


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
    assert "front (every request):\n  record_metrics[" in r.stdout
    assert "-> parse -> validate -> resolve_target -> dispatch[" in r.stdout
    assert "select_key[round robin over 1 key]" in r.stdout  # the key stage
    assert "upstream[retries=2 with backoff, key failover on 401/403/429]" in r.stdout  # retry stage
    assert "dispatch[primary target, then the route's fallbacks]" in r.stdout  # fallback stage
    assert "anthropic_to_openai -> upstream" in r.stdout
    r = run("graph", "specs/", "--format", "dot")
    assert r.returncode == 0 and r.stdout.startswith("digraph vandamme {")


def test_explain_names_the_default_fallback_alias_target():
    r = run("explain", "claude-3-5-haiku-20241022", "specs/")
    assert r.returncode == 0, r.stderr
    assert "substring_alias 'haiku'" in r.stdout
    assert "provider: openai" in r.stdout and "model:    gpt-4o-mini" in r.stdout
    assert "select_key -> render_headers -> decode_body -> anthropic_to_openai" in r.stdout


def test_explain_live_skips_providers_without_keys():
    r = run("explain", "claude-3-5-haiku-20241022", "specs/", "--live", "--format", "json",
            env={"ANTHROPIC_API_KEY": "k", "VDM_DEFAULT_PROVIDER": "anthropic"})
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["final"] == {"provider": "anthropic", "model": "claude-3-5-haiku-latest", "format": "anthropic",
                            "base_url": "https://api.anthropic.com"}
    assert "openai" in out["inactive_providers"]


def test_explain_route_with_header_and_tokens(tmp_path):
    (tmp_path / "a.yaml").write_text("""
version: 1
default_provider: o
providers:
  o: {format: openai, base_url: "http://127.0.0.1:1/v1", api_keys: [k]}
  a: {format: anthropic, base_url: "http://127.0.0.1:2", api_keys: [k]}
routes:
  - name: long
    match: {min_input_tokens: 1000}
    to: "a:claude-big"
  - name: team
    match: {headers: {x-team: "research*"}}
    to: "o:gpt-research"
""")
    r = run("explain", "anything", str(tmp_path), "--tokens", "5000")
    assert "MATCHED -> a:claude-big" in r.stdout
    r = run("explain", "anything", str(tmp_path), "--header", "x-team=research-1")
    assert "MATCHED -> o:gpt-research" in r.stdout and "provider: o" in r.stdout
    assert run("explain", "x", str(tmp_path), "--header", "novalue").returncode == 2


def test_config_show_says_which_presets_are_inactive():
    r = run("config", "show", "specs/", env={"GROQ_API_KEY": "gsk-0123456789abcdef"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(ln.strip().startswith("groq:") and "# active" in ln for ln in lines)
    assert any(ln.strip().startswith("openai:") and "inactive: no API key: set OPENAI_API_KEY" in ln for ln in lines)
    assert "gsk-0123456789abcdef" not in r.stdout and "****cdef" in r.stdout


def test_reader_closing_the_pipe_is_not_an_error():
    """`vandamme explain … | head -1`: the reader leaves before the output is written."""
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    p = subprocess.Popen([*VANDAMME, "explain", "claude-3-5-haiku-20241022", "specs/"], cwd=ROOT, env=e,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.close()  # no reader left: every write of the command fails with EPIPE
    _, err = p.communicate(timeout=60)
    assert p.returncode == 0
    assert b"Traceback" not in err and b"BrokenPipeError" not in err

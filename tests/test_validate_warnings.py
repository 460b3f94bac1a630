"""`vandamme validate` warnings: references to providers inactive in this environment, on their
own channel; exit 0 unless --deny-warnings."""
from __future__ import annotations

import json

from harness import run_cli

SPEC = """\
version: 1
default_provider: openai
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
    api_keys: [sk-test-0123456789]
    aliases: {fast: "anthropic:claude-3-5-haiku-latest", cheap: gpt-4o-mini}
  anthropic:
    format: anthropic
    base_url: https://api.anthropic.com
    aliases: {haiku: claude-3-5-haiku-latest}
  groq:
    format: openai
    base_url: https://api.groq.com/openai/v1
    enabled: false
aliases:
  big: anthropic:claude-opus-4-1
  small: openai:gpt-4o-mini
routes:
  - name: research
    match: {headers: {x-team: "research*"}}
    to: "anthropic:claude-opus-4-1"
    fallbacks: ["openai:gpt-4o", "groq:llama-3.3-70b"]
"""


run = run_cli


def col(text: str, line_no: int, needle: str) -> int:
    return text.splitlines()[line_no - 1].index(needle) + 1


def test_inactive_providers_named_by_routes_and_aliases_warn(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC)
    r = run("validate", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "valid (" in r.stdout and "4 warnings" in r.stdout
    f = f"{tmp_path}/a.yaml"
    lines = r.stderr.splitlines()
    assert f"{f}:23:5: routes[0].to: warning: route 'research' targets anthropic:claude-opus-4-1; " \
           "provider 'anthropic' is not configured: no API key: set ANTHROPIC_API_KEY" in lines
    groq = col(SPEC, 24, '"groq')  # a list item's position is the item's (its opening quote)
    assert f"{f}:24:{groq}: routes[0].fallbacks[1]: warning: route 'research' falls back " \
           "to groq:llama-3.3-70b; provider 'groq' is not configured: disabled in the spec (enabled: false)" in lines
    assert any(ln.startswith(f"{f}:8:{col(SPEC, 8, 'fast')}: providers.openai.aliases.fast: warning: alias 'fast' "
                             "resolves to anthropic:claude-3-5-haiku-latest; provider 'anthropic'") for ln in lines)
    assert any(ln.startswith(f"{f}:18:3: aliases.big: warning: ") for ln in lines)
    # not reported: an active default provider, aliases of active providers, the inactive
    # provider's own aliases (switched off with it)
    assert not any("default_provider" in ln or "aliases.small" in ln or "aliases.haiku" in ln for ln in lines)


def test_deny_warnings_exits_1(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC)
    r = run("validate", str(tmp_path), "--deny-warnings")
    assert r.returncode == 1
    assert "valid (" not in r.stdout
    assert r.stderr.rstrip().endswith("4 warnings (--deny-warnings)")
    r = run("validate", str(tmp_path), "--deny-warnings", "--format", "json")
    assert r.returncode == 1
    j = json.loads(r.stdout)
    assert j["valid"] is False and j["errors"] == []
    (w,) = [w for w in j["warnings"] if w["path"] == "routes[0].to"]
    assert (w["line"], w["col"]) == (23, 5) and "ANTHROPIC_API_KEY" in w["message"]
    assert not w["message"].startswith("warning")  # the channel says so, not the message


def test_json_lists_warnings_without_failing(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC)
    r = run("validate", str(tmp_path), "--format", "json")
    assert r.returncode == 0
    j = json.loads(r.stdout)
    assert j["valid"] is True and len(j["warnings"]) == 4
    assert r.stderr == ""


def test_key_in_the_environment_silences_the_warning(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC.replace("    enabled: false\n", "    api_keys: [gsk-0123456789]\n"))
    r = run("validate", str(tmp_path), "--deny-warnings", env={"ANTHROPIC_API_KEY": "sk-ant-0123456789"})
    assert r.returncode == 0, r.stderr
    assert "warning" not in r.stderr and "warning" not in r.stdout


def test_inactive_default_provider_warns(tmp_path):
    (tmp_path / "a.yaml").write_text(SPEC.replace("default_provider: openai", "default_provider: anthropic"))
    r = run("validate", str(tmp_path), "--format", "json")
    assert r.returncode == 0
    (w,) = [w for w in json.loads(r.stdout)["warnings"] if w["path"] == "default_provider"]
    assert w["line"] == 2 and "provider 'anthropic' is not configured" in w["message"]

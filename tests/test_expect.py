"""`expect:` in a spec: routing tests that `vandamme validate` runs through the runtime's own
resolution (the resolve_target stage, Gateway.pipeline_for), as declared: no key is set here."""
from __future__ import annotations

import json

import pytest

from vandamme.engine.cli import main

SPEC = """\
version: 1
default_provider: openai
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
    aliases: {haiku: gpt-4o-mini, sonnet: gpt-4o, opus: o3}
  anthropic:
    format: anthropic
    base_url: https://api.anthropic.com
    aliases: {haiku: claude-3-5-haiku-latest}
  gemini:
    format: openai
    base_url: https://generativelanguage.googleapis.com/v1beta/openai
    middleware: [{redact: {patterns: ["sk-[a-z0-9]+"]}}]
  groq:
    format: openai
    base_url: https://api.groq.com/openai/v1
    enabled: false
aliases:
  big: gemini:gemini-2.5-pro
middleware: [{clamp: {max_tokens: 4096}}]
routes:
  - name: research
    match: {headers: {x-team: "research*"}}
    to: "openai:o3"
    middleware: [{drop_params: {fields: [top_k]}}]
  - name: agents
    match: {min_tools: 2, thinking: true}
    to: "anthropic:claude-sonnet-4-5"
  - name: long-context
    match: {min_input_tokens: 100000}
    to: big
    fallbacks: ["openai:gpt-4o"]
"""

PASSING = """\
expect:
  - {model: claude-3-5-haiku-20241022, resolves_to: openai:gpt-4o-mini, middleware: [clamp], fallbacks: []}
  - {model: claude-opus-4-1, headers: {x-team: research-ml}, resolves_to: openai:o3, middleware: [clamp, drop_params]}
  - {model: anything, tokens: 150000, resolves_to: gemini:gemini-2.5-pro, fallbacks: [openai:gpt-4o], middleware: [clamp, redact]}
  - {model: claude-sonnet-4-5, thinking: true, tools: 3, resolves_to: anthropic:claude-sonnet-4-5}
  - {model: claude-sonnet-4-5, tools: 3, resolves_to: openai:gpt-4o}
  - {model: "groq:llama-3.3-70b", error: "disabled in the spec"}
"""


@pytest.fixture(autouse=True)
def no_keys(monkeypatch):
    """As declared means as declared: no provider has a key in this environment."""
    import os
    for k in list(os.environ):
        if k.endswith("_API_KEY"):
            monkeypatch.delenv(k)


def write(tmp_path, expect: str):
    (tmp_path / "a.yaml").write_text(SPEC + expect)
    return str(tmp_path)


def validate(capsys, *args):
    code = main(["validate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def position(tmp_path, line_no: int, needle: str) -> str:
    """``a.yaml:LINE:COL`` of ``needle`` on (1-based) line ``line_no`` of the spec file."""
    line = (tmp_path / "a.yaml").read_text().splitlines()[line_no - 1]
    return f"a.yaml:{line_no}:{line.index(needle) + 1}"


def test_passing_expectations_exit_0(tmp_path, capsys):
    code, out, err = validate(capsys, write(tmp_path, PASSING))
    assert code == 0, err
    assert "6 expectations met" in out
    code, out, _ = validate(capsys, str(tmp_path), "--format", "json")
    j = json.loads(out)
    assert code == 0 and j["valid"] is True and j["errors"] == [] and j["expectations"] == 6


def test_failing_expectation_is_a_spec_error_at_the_key(tmp_path, capsys):
    expect = PASSING.replace("resolves_to: openai:o3", "resolves_to: openai:gpt-4o") \
                    .replace("fallbacks: [openai:gpt-4o]", "fallbacks: [openai:gpt-4.1]")
    d = write(tmp_path, expect)
    code, out, err = validate(capsys, d)
    assert code == 1 and "valid (" not in out
    first = SPEC.count("\n") + 2  # the line of expect[0]
    at = position(tmp_path, first + 1, "resolves_to")
    assert f"{at}: expect[1].resolves_to: expected openai:gpt-4o, got openai:o3" in err
    at = position(tmp_path, first + 2, "fallbacks")
    assert f"{at}: expect[2].fallbacks: expected [openai:gpt-4.1], got [openai:gpt-4o]" in err
    assert err.rstrip().endswith("2 errors, 6 warnings")  # no key here: routes name inactive providers

    code, out, _ = validate(capsys, d, "--format", "json")
    j = json.loads(out)
    assert code == 1 and j["valid"] is False
    by_path = {e["path"]: e for e in j["errors"]}
    assert set(by_path) == {"expect[1].resolves_to", "expect[2].fallbacks"}
    e = by_path["expect[1].resolves_to"]
    assert e["file"].endswith("a.yaml") and e["line"] == first + 1
    assert e["col"] == int(position(tmp_path, first + 1, "resolves_to").rsplit(":", 1)[1])
    assert e["message"] == "expected openai:gpt-4o, got openai:o3"


def test_middleware_and_error_expectations(tmp_path, capsys):
    d = write(tmp_path, """\
expect:
  - {model: claude-opus-4-1, headers: {x-team: research}, resolves_to: openai:o3, middleware: [clamp]}
  - {model: "groq:llama-3.3-70b", error: "no such thing"}
  - {model: claude-3-5-haiku-20241022, error: "not configured"}
""")
    code, _, err = validate(capsys, d)
    assert code == 1
    assert "expect[0].middleware: expected [clamp], got [clamp, drop_params]" in err
    assert ("expect[1].error: expected an error containing 'no such thing', got error 400: "
            "provider 'groq' is not configured: disabled in the spec (enabled: false) "
            "(model 'groq:llama-3.3-70b' resolves to it)") in err
    assert "expect[2].error: expected an error containing 'not configured', got openai:gpt-4o-mini" in err


def test_expect_entries_are_checked_by_the_schema(tmp_path, capsys):
    d = write(tmp_path, """\
expect:
  - {model: claude-3-5-haiku-20241022}
  - {model: x, resolves_to: openai:x, colour: red}
""")
    code, _, err = validate(capsys, d)
    assert code == 1
    assert "expect[0]" in err and "resolves_to" in err
    assert "expect[1]" in err and "colour" in err


def test_no_expect_section_changes_nothing(tmp_path, capsys):
    code, out, err = validate(capsys, write(tmp_path, ""))
    assert code == 0, err
    assert "expectation" not in out

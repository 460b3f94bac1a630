"""The example stage plugin (examples/word-limit), installed for real with pip into a folder of the
test's own, loaded by its entry point name and by import path, and run through the server."""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import anthropic
import pytest

import vandamme.transforms.registry as registry_module
from fakes.openai_upstream import FakeOpenAI, Reply
from harness import ROOT, LiveGateway, run_cli

EXAMPLE = ROOT / "examples" / "word-limit"
USER = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """pip-installs the example into a fresh target folder (offline: no deps, no build isolation)."""
    target = tmp_path_factory.mktemp("plugin-site")
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--no-index", "--target", str(target), str(EXAMPLE)],
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert list(target.glob("vandamme_word_limit-*.dist-info/entry_points.txt"))
    return target


@pytest.fixture
def plugin_path(installed, monkeypatch):
    """The installed plugin on sys.path, and a registry that sees its entry point."""
    monkeypatch.syspath_prepend(str(installed))
    importlib.invalidate_caches()
    monkeypatch.setattr(registry_module, "_DEFAULT", None)
    yield installed
    sys.modules.pop("vandamme_word_limit", None)


def spec_with(middleware: str):
    return lambda u: f"""
version: 1
server: {{max_retries: 0}}
default_provider: oa
providers:
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [sk-oa-0123456789]}}
{middleware}
"""


def run_through(tmp_path, middleware: str):
    fake = FakeOpenAI()
    fake.enqueue(Reply(text="one two three four five"), Reply(text="alpha beta gamma delta"))
    with LiveGateway(spec_with(middleware), {"oa": fake}, tmp_path) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="k", max_retries=0, timeout=15)
        msg = c.messages.create(model="gpt-4o", max_tokens=50, system="Be nice.", messages=USER)
        with c.messages.stream(model="gpt-4o", max_tokens=50, messages=USER) as s:
            streamed = "".join(s.text_stream)
        graph = gw.gateway.providers["oa"].pipeline.nodes
    return fake, msg, streamed, graph


def test_plugin_by_entry_point_name(tmp_path, plugin_path):
    fake, msg, streamed, nodes = run_through(tmp_path, "middleware: [{word_limit: {words: 3}}]")
    system = fake.requests[0]["json"]["messages"][0]
    assert system == {"role": "system", "content": "Be nice.\n\nAnswer in at most 3 words."}
    assert msg.content[0].text == "one two three"  # on_response
    assert streamed == "alpha beta gamma"  # on_event, across split deltas
    node = next(n for n in nodes if n.name == "word_limit")
    assert node.defined_by == "plugin vandamme-word-limit"


def test_plugin_by_import_path_changes_the_request(tmp_path, installed, monkeypatch):
    monkeypatch.syspath_prepend(str(installed))
    fake, msg, streamed, nodes = run_through(
        tmp_path, 'middleware: [{use: "vandamme_word_limit:WordLimit", with: {words: 2, instruction: "Max {words}."}}]')
    assert fake.requests[0]["json"]["messages"][0]["content"] == "Be nice.\n\nMax 2."
    assert fake.requests[1]["json"]["messages"][0] == {"role": "system", "content": "Max 2."}
    assert msg.content[0].text == "one two" and streamed == "alpha beta"
    assert [(n.side, n.defined_by) for n in nodes if n.name == "word_limit"] == [
        ("request", "import vandamme_word_limit:WordLimit"), ("response", "import vandamme_word_limit:WordLimit")]


def _cli(*args, pythonpath: Path):
    return run_cli(*args, pythonpath=[pythonpath])


def test_validate_and_graph_load_the_installed_plugin(tmp_path, installed):
    spec = tmp_path / "specs"
    spec.mkdir()
    (spec / "a.yaml").write_text(spec_with("middleware: [{word_limit: {words: 3}}]")({"oa": "http://127.0.0.1:9/v1"}))
    r = _cli("graph", str(spec), "--format", "json", pythonpath=installed)
    assert r.returncode == 0, r.stderr
    stages = json.loads(r.stdout)["providers"]["oa"]["pipelines"]["messages"]["stages"]
    mine = next(s for s in stages if s["name"] == "word_limit")
    assert mine["defined_by"] == "plugin vandamme-word-limit" and mine["source"].endswith("a.yaml:7:14")
    (spec / "a.yaml").write_text(spec_with("middleware: [{word_limit: {words: 0}}]")({"oa": "http://127.0.0.1:9/v1"}))
    r = _cli("validate", str(spec), pythonpath=installed)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "a.yaml:7:28: middleware[0].word_limit.words: must be >= 1, got 0" in r.stderr


def test_a_broken_plugin_is_a_spec_error_where_it_is_named(tmp_path):
    site = tmp_path / "site"
    dist = site / "broken_stage-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-stage\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[vandamme.stages]\nbroken = broken_stage_module:Nope\n")
    (site / "broken_stage_module.py").write_text("raise RuntimeError('plugin import exploded')\n")
    spec = tmp_path / "specs"
    spec.mkdir()
    (spec / "a.yaml").write_text("version: 1\nmiddleware: [broken]\n")
    r = _cli("validate", str(spec), pythonpath=site)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "a.yaml:2:14: middleware[0]: plugin 'broken'" in r.stderr
    assert "RuntimeError: plugin import exploded" in r.stderr
    (spec / "a.yaml").write_text("version: 1\n")  # not named: the broken plugin does not matter
    assert _cli("validate", str(spec), pythonpath=site).returncode == 0


def test_docs_middleware_examples_validate(tmp_path, installed):
    """Every YAML example of docs/middleware.md, merged over the default specs, validates (the
    plugin installed, as the doc says), and the doc covers every built-in middleware and its keys."""
    import re
    import shutil

    from vandamme.transforms.registry import Registry

    doc = (ROOT / "docs" / "middleware.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    assert len(blocks) >= 3
    for i, block in enumerate(blocks):
        spec = tmp_path / f"specs{i}"
        shutil.copytree(ROOT / "specs", spec)
        (spec / "99-doc.yaml").write_text(textwrap_dedent(block))
        r = _cli("validate", str(spec), pythonpath=installed)
        assert r.returncode == 0, (block, r.stderr)
    for stage in Registry(plugins=False):
        if stage.declarable:
            assert f"`{stage.name}`" in doc, stage.name
            for key in (stage.config_schema.get("properties") or {}):
                assert f"`{key}`" in doc, (stage.name, key)


def textwrap_dedent(text: str) -> str:
    import textwrap

    return textwrap.dedent(text)

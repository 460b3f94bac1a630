"""The same checks for every registered stage, built-in or plugin (the example plugin by import
path): its config schema is valid and its defaults apply; it appears in `graph` with its source;
it emits its span; and a request through it — buffered, then streamed — gets a well-formed answer."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import anthropic
import httpx
import pytest
from jsonschema import Draft202012Validator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from vandamme.engine.declarations import apply_defaults
from vandamme.engine.graph import graph_json
from fakes.anthropic_upstream import FakeAnthropic
from fakes.openai_upstream import FakeOpenAI
from harness import LiveGateway
from vandamme.transforms.registry import Registry, import_stage
from vandamme.kernel import OPENAI

EXAMPLE_SRC = Path(__file__).resolve().parent.parent / "examples" / "word-limit" / "src"
sys.path.insert(0, str(EXAMPLE_SRC))  # the example plugin, by import path
PLUGIN = "vandamme_word_limit:WordLimit"

REGISTRY = Registry(plugins=False)
DECLARABLE = [s for s in REGISTRY if s.declarable] + [import_stage(PLUGIN)]
CORE = [s for s in REGISTRY if not s.declarable]
USER = [{"role": "user", "content": "hello there"}]
GATEWAY_KEY = "gw-conformance-0123456789"  # so that `authenticate` is in the graph too


def example_config(spec) -> dict:
    return dict((spec.config_schema.get("examples") or [{}])[0])


def declaration(spec) -> str:
    """The spec's YAML for one declared stage with its example config."""
    config = example_config(spec)
    if spec.origin.startswith("import "):
        return f'{{use: "{spec.origin[len("import "):]}", with: {config!r}}}'.replace("'", '"')
    return f"{{{spec.name}: {config!r}}}".replace("'", '"')


def gateway_spec(declared: str, on_openai_only: bool):
    """OpenAI, Azure and Anthropic providers, a route with fallbacks; ``declared`` goes where its
    format allows (the OpenAI provider's middleware, or the global list)."""
    def spec(u):
        glob = "" if on_openai_only or not declared else f"middleware: [{declared}]"
        own = f"middleware: [{declared}]" if on_openai_only and declared else ""
        return f"""
version: 1
server: {{max_retries: 0, ping_interval: 5, auth: {{keys: [{{name: conformance, key: {GATEWAY_KEY}}}]}}}}
default_provider: oa
providers:
  oa:
    format: openai
    base_url: "{u['oa']}"
    api_keys: [sk-oa-0123456789]
    {own}
  az:
    format: openai
    api_style: azure
    api_version: "2024-10-21"
    base_url: "{u['az']}"
    api_keys: [az-0123456789]
  an:
    format: anthropic
    base_url: "{u['an']}"
    api_keys: [sk-an-0123456789]
routes:
  - name: r
    match: {{model: "routed"}}
    to: oa:gpt-4o
    fallbacks: [an:claude-x]
{glob}
"""
    return spec


def run_all(tmp_path, declared: str, on_openai_only: bool):
    """Every endpoint, buffered and streamed, on every provider; returns (spans, gateway, answers)."""
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    fakes = {"oa": FakeOpenAI(), "az": FakeOpenAI(), "an": FakeAnthropic()}
    answers = []
    with LiveGateway(gateway_spec(declared, on_openai_only), fakes, tmp_path, tracer_provider=tp) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key=GATEWAY_KEY, max_retries=0, timeout=15)
        models = ["oa:gpt-4o", "routed"] if on_openai_only else ["oa:gpt-4o", "az:gpt-4o", "an:claude-x", "routed"]
        for model in models:
            msg = c.messages.create(model=model, max_tokens=30, system="Be brief.", messages=USER)
            answers.append(msg)
            with c.messages.stream(model=model, max_tokens=30, messages=USER) as s:
                answers.append(s.get_final_message())
            r = httpx.post(gw.base_url + "/v1/messages/count_tokens", timeout=15,
                           json={"model": model, "messages": USER}, headers={"x-api-key": GATEWAY_KEY})
            assert r.status_code == 200 and r.json()["input_tokens"] > 0
        graph = graph_json(gw.gateway)
    return exporter.get_finished_spans(), graph, answers


@pytest.mark.parametrize("spec", DECLARABLE, ids=lambda s: s.name)
def test_declarable_stage_conformance(tmp_path, spec):
    Draft202012Validator.check_schema(spec.config_schema)
    config = apply_defaults(spec.config_schema, example_config(spec))
    assert not list(Draft202012Validator(spec.config_schema).iter_errors(config))
    for key, sub in (spec.config_schema.get("properties") or {}).items():
        if "default" in sub:
            assert key in config  # defaults apply
    assert spec.description and spec.hooks

    openai_only = spec.consumes == OPENAI
    spans, graph, answers = run_all(tmp_path, declaration(spec), openai_only)
    names = {s.name for s in spans}
    assert spec.name in names  # its span
    providers = ["oa"] if openai_only else ["oa", "az", "an"]
    for p in providers:
        pipes = graph["providers"][p]["pipelines"]
        stages = pipes["messages"]["stages"]
        mine = [s for s in stages if s["name"] == spec.name]
        assert mine and all(s["defined_by"] == spec.origin for s in mine)
        assert all(re.search(r"gateway\.yaml:\d+:\d+$", s["source"]) for s in mine)  # file:line:col
        assert pipes["messages"]["middleware"] == [spec.name]
    for msg in answers:  # buffered and streamed answers came through whole
        assert msg.type == "message" and msg.stop_reason and msg.content[0].type == "text"


def test_core_stage_conformance(tmp_path):
    """Every built-in pipeline stage shows up in the graph as built in and emits its span in a run
    that goes through every provider kind (an OpenAI-side user stage brings in encode_upstream)."""
    seed = '{use: "stage_samples:OpenAISeed"}'
    spans, graph, answers = run_all(tmp_path, seed, on_openai_only=True)
    span_names = {s.name for s in spans}
    # the Azure and Anthropic providers, too
    spans2, graph2, _ = run_all(tmp_path / "2", "", on_openai_only=False)
    span_names |= {s.name for s in spans2}
    in_graph = {st["name"]: st for g in (graph, graph2) for pipe in [g["front"]] +
                [pp for prov in g["providers"].values() for pp in prov["pipelines"].values()]
                for st in pipe["stages"]}
    for spec in CORE:
        assert spec.name in in_graph, spec.name
        assert in_graph[spec.name]["source"] == "built in" and in_graph[spec.name]["kind"] == spec.kind.value
        assert spec.name in span_names, spec.name
        Draft202012Validator.check_schema(spec.config_schema)

"""Azure URL and header shape, Gemini thought-signature round trip, and fallbacks across formats."""
import anthropic
import pytest

from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from fakes.openai_upstream import FakeOpenAI, Reply, ToolCall
from harness import LiveGateway

TOOL = {"name": "lookup", "description": "Look something up",
        "input_schema": {"type": "object", "properties": {"q": {"type": "string"}}}}


def client(gw):
    return anthropic.Anthropic(base_url=gw.base_url, api_key="client", max_retries=0, timeout=15)


def test_azure_deployment_url_version_and_api_key_header(tmp_path):
    fake = FakeOpenAI()
    spec = lambda u: f"""
version: 1
default_provider: az
providers:
  az:
    format: openai
    api_style: azure
    base_url: "{u['az'].removesuffix('/v1')}"
    api_version: "2024-10-21"
    api_keys: [azure-key-0123456789]
    deployments: {{gpt-4o: prod-gpt4o}}
"""
    with LiveGateway(spec, {"az": fake}, tmp_path, environ={"AZ_API_VERSION": "2025-01-01-preview"}) as gw:
        msg = client(gw).messages.create(model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert msg.content[0].text
        sent = fake.requests[-1]
        assert sent["path"] == "/openai/deployments/prod-gpt4o/chat/completions"
        assert sent["query"] == {"api-version": "2025-01-01-preview"}  # env overlay wins
        assert sent["headers"]["api-key"] == "azure-key-0123456789"
        assert "Authorization" not in sent["headers"]
        client(gw).messages.create(model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert fake.requests[-1]["path"] == "/openai/deployments/gpt-4o-mini/chat/completions"


@pytest.mark.parametrize("stream", [False, True])
def test_gemini_thought_signature_round_trip(tmp_path, stream):
    fake = FakeOpenAI()
    spec = lambda u: f"""
version: 1
default_provider: gemini
thought_signatures: {{cache_ttl: 60, max_cache_size: 100}}
providers:
  gemini:
    format: openai
    base_url: "{u['g']}"
    api_keys: [gem-key-0123456789]
    middleware: [gemini_thought_signatures]
"""
    with LiveGateway(spec, {"g": fake}, tmp_path) as gw:
        assert gw.gateway.providers["gemini"].pipeline.middleware == ("gemini_thought_signatures",)
        fake.enqueue(Reply(tool_calls=[ToolCall("lookup", {"q": "vandamme"}, id="call_g1",
                                                extra_content={"google": {"thought_signature": "sig-XYZ=="}})]),
                     Reply(text="Found it."))
        c = client(gw)
        messages = [{"role": "user", "content": "find vandamme"}]
        kw = dict(model="gemini-2.5-pro", max_tokens=100, tools=[TOOL], messages=messages)
        if stream:
            with c.messages.stream(**kw) as s:
                first = s.get_final_message()
        else:
            first = c.messages.create(**kw)
        call = next(b for b in first.content if b.type == "tool_use")
        assert call.id == "call_g1"
        # the client sends the history back without the signature (Anthropic has no such field)
        messages += [{"role": "assistant", "content": [{"type": "tool_use", "id": call.id, "name": call.name,
                                                        "input": call.input}]},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "ok"}]}]
        second = c.messages.create(model="gemini-2.5-pro", max_tokens=100, tools=[TOOL], messages=messages)
        assert second.content[0].text == "Found it."
        sent_call = fake.requests[-1]["json"]["messages"][-2]["tool_calls"][0]
        assert sent_call["id"] == "call_g1"
        assert sent_call["extra_content"] == {"google": {"thought_signature": "sig-XYZ=="}}


def fallback_spec(u):
    return f"""
version: 1
server: {{max_retries: 0}}
default_provider: oa
providers:
  an: {{format: anthropic, base_url: "{u['an']}", api_keys: [an-key-0123456789]}}
  oa: {{format: openai, base_url: "{u['oa']}", api_keys: [oa-key-0123456789]}}
routes:
  - name: anthropic-first
    match: {{model: "*sonnet*"}}
    to: "an:claude-sonnet-4-5"
    fallbacks: ["oa:gpt-4o"]
  - name: openai-first
    match: {{model: "*gpt*"}}
    to: "oa:gpt-4o"
    fallbacks: ["an:claude-sonnet-4-5"]
"""


@pytest.mark.parametrize("stream", [False, True])
def test_fallback_from_anthropic_to_openai(tmp_path, stream):
    an, oa = FakeAnthropic(), FakeOpenAI()
    with LiveGateway(fallback_spec, {"an": an, "oa": oa}, tmp_path) as gw:
        an.enqueue(AnthropicReply(status=529))
        kw = dict(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])
        if stream:
            with client(gw).messages.stream(**kw) as s:
                msg = s.get_final_message()
        else:
            msg = client(gw).messages.create(**kw)
        assert msg.content[0].text == "Hello! How can I help you today?"  # converted OpenAI answer
        assert msg.model == "claude-sonnet-4-5"
        assert len(an.requests) == 1 and oa.requests[-1]["json"]["model"] == "gpt-4o"


def test_fallback_from_openai_to_anthropic_and_no_fallback_on_400(tmp_path):
    an, oa = FakeAnthropic(), FakeOpenAI()
    with LiveGateway(fallback_spec, {"an": an, "oa": oa}, tmp_path) as gw:
        oa.enqueue(Reply(status=500, error_message="boom"))
        msg = client(gw).messages.create(model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "x"}])
        assert msg.content[0].text == "Hello from the fake Anthropic upstream."
        assert an.requests[-1]["json"]["model"] == "claude-sonnet-4-5"
        oa.enqueue(Reply(status=400, error_message="bad request"))
        with pytest.raises(anthropic.BadRequestError):
            client(gw).messages.create(model="gpt-4o", max_tokens=20, messages=[{"role": "user", "content": "x"}])
        assert len(an.requests) == 1  # a 400 is not worth a fallback


def test_fallback_attempts_are_spans(tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    an, oa = FakeAnthropic(), FakeOpenAI()
    with LiveGateway(fallback_spec, {"an": an, "oa": oa}, tmp_path, tracer_provider=tp) as gw:
        an.enqueue(AnthropicReply(status=503))
        client(gw).messages.create(model="claude-sonnet-4-5", max_tokens=20, messages=[{"role": "user", "content": "x"}])
    spans = exporter.get_finished_spans()
    attempts = [s for s in spans if s.name == "fallback.attempt"]
    assert [s.attributes["vandamme.target"] for s in attempts] == ["an:claude-sonnet-4-5", "oa:gpt-4o"]
    outcomes = [s.attributes["vandamme.outcome"] for s in spans if s.name == "upstream.attempt"]
    assert outcomes == ["error", "ok"]

"""Metrics (vandamme/engine/metrics.py, the record_metrics stage): counted right under concurrent traffic
through the real gateway (anthropic SDK client; real fake upstreams on 127.0.0.1), buffered and
streamed, converted (OpenAI-format) and passthrough (Anthropic-format), upstream errors, retries,
key failovers, fallbacks and a client that goes away; ``GET /metrics`` parsed with
prometheus_client's own parser; running totals and recent requests consistent with what was sent;
OTLP export reaching a local collector; auth of the endpoints."""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import anthropic
import httpx
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families

from vandamme.engine.metrics import ModelLabels, histogram_quantile, stream_error_type
from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from fakes.openai_upstream import FakeOpenAI, Reply
from fakes.otlp_sink import OTLPSink
from harness import LiveGateway, mid_stream
from vandamme.transforms.errors import error_event

OA_KEY = "sk-oa-metrics-0123456789abcdef"
AN_KEYS = ("sk-an-metrics-first-0123456789", "sk-an-metrics-second-0123456789")
GATEWAY_KEY = "vdm-metrics-gateway-key-0123456789"
USER = [{"role": "user", "content": "hello"}]
# what the fakes report: FakeOpenAI prompt 12 / completion 7; FakeAnthropic input 12 / output 7
IN, OUT = 12, 7


def spec_text(u, extra: str = "", server: str = "") -> str:
    return f"""
version: 1
server: {{max_retries: 0, retry_backoff: 0.01, ping_interval: 30{server}}}
default_provider: oa
providers:
  oa:
    format: openai
    base_url: "{u['oa']}"
    api_keys: ["{OA_KEY}"]
    max_retries: 1
  ob:
    format: openai
    base_url: "{u['ob']}"
    api_keys: ["{OA_KEY}"]
  an:
    format: anthropic
    base_url: "{u['an']}"
    api_keys: ["{AN_KEYS[0]}", "{AN_KEYS[1]}"]
routes:
  - name: with-fallback
    match: {{model: "fallback-me"}}
    to: ob:gpt-4o-mini
    fallbacks: [an:claude-fallback]
{extra}
"""


def gateway(tmp_path, extra: str = "", server: str = "", upstreams: dict | None = None) -> LiveGateway:
    fakes = {"oa": FakeOpenAI(), "ob": FakeOpenAI(), "an": FakeAnthropic(), **(upstreams or {})}
    return LiveGateway(lambda u: spec_text(u, extra, server), fakes, tmp_path)


def client(gw, key: str = "client-key") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.base_url, api_key=key, max_retries=0, timeout=15)


def scrape(gw, **headers) -> dict[str, list]:
    r = httpx.get(gw.base_url + "/metrics", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {f.name: f.samples for f in text_string_to_metric_families(r.text)}


def value(fams: dict, sample: str, **labels) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    family = max((f for f in fams if sample.startswith(f)), key=len, default=None)
    assert family is not None, f"{sample} not in {sorted(fams)}"
    return sum(s.value for s in fams[family] if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


def totals(gw, **headers) -> dict:
    r = httpx.get(gw.base_url + "/metrics/running-totals", headers=headers, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def recent(gw, limit: int = 500) -> list[dict]:
    r = httpx.get(gw.base_url + f"/metrics/recent?limit={limit}", timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def settled(gw, check, limit: float = 10.0):
    """``check(fams)`` once it holds (a stream's outcome is recorded when its last byte is sent,
    just after the client has read it); bounded."""
    deadline = time.monotonic() + limit
    while True:
        fams = scrape(gw)
        try:
            check(fams)
            return fams
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# --------------------------------------------------------------------------- traffic
def test_counted_right_under_concurrent_traffic(tmp_path):
    n = 12  # of each kind: buffered/streamed x converted/passthrough
    with gateway(tmp_path) as gw:
        c = client(gw)
        sent: dict[str, tuple] = {}  # request id -> (model asked, stream)

        def buffered(model):
            raw = c.messages.with_raw_response.create(model=model, max_tokens=20, messages=USER)
            assert raw.parse().content[0].text
            return raw.headers["request-id"], model, False

        def streamed(model):
            with c.messages.stream(model=model, max_tokens=20, messages=USER) as s:
                msg = s.get_final_message()
                rid = s.response.headers["request-id"]
            assert msg.content[0].text and msg.usage.output_tokens == OUT
            return rid, model, True

        jobs = [(buffered, "oa:gpt-4o"), (streamed, "oa:gpt-4o"), (buffered, "an:claude-x"),
                (streamed, "an:claude-x")] * n
        with ThreadPoolExecutor(8) as pool:
            for rid, model, stream in pool.map(lambda job: job[0](job[1]), jobs):
                sent[rid] = (model, stream)
        assert len(sent) == 4 * n
        r = httpx.post(gw.base_url + "/v1/messages/count_tokens", json={"model": "an:claude-x", "messages": USER},
                       headers={"x-api-key": "client-key"}, timeout=10)
        assert r.status_code == 200

        def all_recorded(fams):
            assert value(fams, "vandamme_requests_total") == 4 * n + 1
        fams = settled(gw, all_recorded)

        for provider, model in (("oa", "gpt-4o"), ("an", "claude-x")):
            ok = {"provider": provider, "model": model, "status": "200", "error_type": ""}
            assert value(fams, "vandamme_requests_total", endpoint="messages", **ok) == 2 * n
            genai = {"gen_ai_operation_name": "chat", "gen_ai_provider_name": provider,
                     "gen_ai_request_model": model}
            assert value(fams, "gen_ai_client_operation_duration_seconds_count", **genai, error_type="") == 2 * n
            assert value(fams, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="input") == 2 * n * IN
            assert value(fams, "gen_ai_client_token_usage_sum", **genai, gen_ai_token_type="output") == 2 * n * OUT
            assert value(fams, "gen_ai_client_token_usage_count", **genai, gen_ai_token_type="input") == 2 * n
            # time to first chunk: streams only
            assert value(fams, "gen_ai_client_operation_time_to_first_chunk_seconds_count", **genai) == n
            assert value(fams, "vandamme_active_streams", provider=provider) == 0
            assert value(fams, "vandamme_requests_in_flight", provider=provider) == 0
        assert value(fams, "vandamme_upstream_attempts_total", provider="oa") == 2 * n
        assert value(fams, "vandamme_upstream_attempts_total", provider="an") == 2 * n + 1  # + count_tokens
        assert value(fams, "vandamme_upstream_retries_total") == 0
        assert value(fams, "vandamme_key_failovers_total") == 0
        # the response model is what the upstream said (the converted answer names the asked one)
        assert value(fams, "gen_ai_client_operation_duration_seconds_count", gen_ai_response_model="gpt-4o") == 2 * n
        # count_tokens: its own operation, no token usage recorded for it
        assert value(fams, "vandamme_requests_total", endpoint="count_tokens", provider="an") == 1
        assert value(fams, "gen_ai_client_operation_duration_seconds_count",
                     gen_ai_operation_name="count_tokens") == 1
        assert value(fams, "gen_ai_client_token_usage_count", gen_ai_operation_name="count_tokens") == 0
        # a histogram's buckets are cumulative and end with +Inf == count
        buckets = [s for s in fams["gen_ai_client_operation_duration_seconds"]
                   if s.name.endswith("_bucket") and s.labels["gen_ai_provider_name"] == "oa"]
        assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == 2 * n
        assert [b.value for b in buckets] == sorted(b.value for b in buckets)

        t = totals(gw)
        assert t["workers"] == 1 and t["since"].endswith("Z")
        assert t["overall"]["requests"] == 4 * n + 1 and t["overall"]["errors"] == 0
        assert t["overall"]["input_tokens"] == 4 * n * IN and t["overall"]["output_tokens"] == 4 * n * OUT
        assert t["overall"]["active_streams"] == 0
        for name, count in (("oa", 2 * n), ("an", 2 * n + 1)):
            assert t["providers"][name]["requests"] == count
            assert t["providers"][name]["input_tokens"] == 2 * n * IN
        assert t["models"]["oa:gpt-4o"]["requests"] == 2 * n
        assert t["models"]["an:claude-x"]["output_tokens"] == 2 * n * OUT
        lat = t["overall"]["latency_ms"]
        assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"]

        rows = recent(gw)
        assert len(rows) == 4 * n + 1
        by_id = {row["request_id"]: row for row in rows}
        assert set(sent) <= set(by_id)
        for rid, (model, stream) in sent.items():
            row = by_id[rid]
            assert row["model_asked"] == model and row["stream"] is stream
            assert (row["provider"], row["status"], row["error_type"]) == (model.split(":")[0], 200, None)
            assert (row["input_tokens"], row["output_tokens"]) == (IN, OUT)
            assert row["latency_ms"] > 0
        assert [row["time"] for row in rows] == sorted((row["time"] for row in rows), reverse=True)
        assert len(recent(gw, limit=5)) == 5


def test_upstream_errors_refusals_and_failed_streams(tmp_path):
    with gateway(tmp_path) as gw:
        c = client(gw)
        oa = gw.upstreams["oa"]
        oa.enqueue(Reply(status=400, error_message="upstream says no"))
        with pytest.raises(anthropic.BadRequestError):
            c.messages.create(model="oa:gpt-4o", max_tokens=20, messages=USER)
        oa.enqueue(Reply(status=503, error_message="busy"), Reply(status=503, error_message="busy"))
        with pytest.raises(anthropic.InternalServerError) as info:  # retried once (max_retries: 1), then given up
            c.messages.create(model="oa:gpt-4o", max_tokens=20, messages=USER)
        assert info.value.status_code == 503
        with pytest.raises(anthropic.BadRequestError):  # refused by the gateway: no provider yet
            c.messages.create(model="oa:gpt-4o", max_tokens=20, messages=[])
        oa.enqueue(Reply(drop_after_events=2))  # the upstream connection drops mid-stream
        with c.messages.stream(model="oa:gpt-4o", max_tokens=20, messages=USER) as s:
            with pytest.raises(anthropic.APIStatusError):
                s.get_final_message()
        gw.upstreams["an"].enqueue(AnthropicReply(drop_after_events=3))  # passthrough: the same
        with c.messages.stream(model="an:claude-x", max_tokens=20, messages=USER) as s:
            with pytest.raises(anthropic.APIStatusError):
                s.get_final_message()

        def recorded(fams):
            assert value(fams, "vandamme_requests_total") == 5
        fams = settled(gw, recorded)
        assert value(fams, "vandamme_requests_total", provider="oa", status="400",
                     error_type="invalid_request_error") == 1
        assert value(fams, "vandamme_requests_total", provider="oa", status="503", error_type="overloaded_error") == 1
        assert value(fams, "vandamme_requests_total", provider="", status="400",
                     error_type="invalid_request_error") == 1
        # streams that failed after their 200 count as errors of the type their error event names
        assert value(fams, "vandamme_requests_total", provider="oa", status="200", error_type="api_error") == 1
        assert value(fams, "vandamme_requests_total", provider="an", status="200", error_type="api_error") == 1
        assert value(fams, "gen_ai_client_operation_duration_seconds_count", error_type="overloaded_error") == 1
        assert value(fams, "vandamme_upstream_retries_total", provider="oa") == 1
        assert value(fams, "vandamme_upstream_attempts_total", provider="oa") == 4  # 1 + 2 + 1
        t = totals(gw)
        assert t["overall"]["requests"] == 5 and t["overall"]["errors"] == 5
        assert t["providers"]["oa"]["errors"] == 3 and t["providers"]["an"]["errors"] == 1
        statuses = sorted((row["status"], row["error_type"]) for row in recent(gw))
        assert statuses == [(200, "api_error"), (200, "api_error"), (400, "invalid_request_error"),
                            (400, "invalid_request_error"), (503, "overloaded_error")]


def test_key_failover_cooldown_and_fallback(tmp_path):
    with gateway(tmp_path) as gw:
        c = client(gw)
        gw.upstreams["an"].enqueue(AnthropicReply(status=429, headers={"retry-after": "300"}, error_body={
            "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
        assert c.messages.create(model="an:claude-x", max_tokens=20, messages=USER).content[0].text
        gw.upstreams["ob"].enqueue(Reply(status=500, error_message="broken"))
        msg = c.messages.create(model="fallback-me", max_tokens=20, messages=USER)  # ob fails, an answers
        assert msg.content[0].text
        fams = scrape(gw)
        assert value(fams, "vandamme_key_failovers_total", provider="an") == 1
        assert value(fams, "vandamme_upstream_attempts_total", provider="an") == 3
        assert value(fams, "vandamme_keys_in_cooldown", provider="an") == 1
        assert value(fams, "vandamme_keys_in_cooldown", provider="oa") == 0
        assert value(fams, "vandamme_fallbacks_total", provider="ob", model="gpt-4o-mini", error_type="api_error") == 1
        assert value(fams, "vandamme_upstream_attempts_total", provider="ob") == 1
        # the request counts once, for the target that answered, on its route
        assert value(fams, "vandamme_requests_total", provider="an", model="claude-fallback",
                     route="with-fallback", status="200") == 1
        assert value(fams, "vandamme_requests_total", provider="ob") == 0
        assert totals(gw)["overall"] == {**totals(gw)["overall"], "requests": 2, "errors": 0}


def test_client_that_goes_away_mid_stream(tmp_path):
    with gateway(tmp_path) as gw:
        gw.upstreams["oa"].enqueue(Reply(text="word " * 200, delay=0.05))
        with mid_stream(gw.base_url, "oa:gpt-4o", USER):
            def streaming(fams):
                assert value(fams, "vandamme_active_streams", provider="oa", model="gpt-4o") == 1
                assert value(fams, "vandamme_requests_in_flight", provider="oa") == 1
            settled(gw, streaming)
        # the client closed its connection: the request is counted as client_closed, the stream gone

        def closed(fams):
            assert value(fams, "vandamme_requests_total", status="200", error_type="client_closed") == 1
            assert value(fams, "vandamme_active_streams") == 0
            assert value(fams, "vandamme_requests_in_flight") == 0
        settled(gw, closed)
        assert totals(gw)["overall"]["errors"] == 1
        assert recent(gw)[0]["error_type"] == "client_closed"


# --------------------------------------------------------------------------- endpoints
def test_endpoints_need_the_gateway_key_when_auth_is_on_and_leak_nothing(tmp_path):
    server = f', auth: {{keys: [{{name: ops, key: "{GATEWAY_KEY}"}}]}}'
    with gateway(tmp_path, server=server) as gw:
        c = client(gw, key=GATEWAY_KEY)
        assert c.messages.create(model="oa:gpt-4o", max_tokens=20, messages=USER).content[0].text
        for path in ("/metrics", "/metrics/running-totals", "/metrics/recent"):
            r = httpx.get(gw.base_url + path, timeout=10)
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            assert "request-id" in r.headers
            for headers in ({"authorization": f"Bearer {GATEWAY_KEY}"}, {"x-vandamme-key": GATEWAY_KEY}):
                r = httpx.get(gw.base_url + path, headers=headers, timeout=10)
                assert r.status_code == 200
                for secret in (GATEWAY_KEY, OA_KEY, *AN_KEYS, "ops"):
                    assert secret not in r.text
                assert "hello" not in r.text  # no content
        fams = scrape(gw, authorization=f"Bearer {GATEWAY_KEY}")
        assert value(fams, "vandamme_requests_total", provider="oa", status="200") == 1
    with gateway(tmp_path / "open", server=server, extra="metrics: {require_key: false}") as gw:
        assert httpx.get(gw.base_url + "/metrics", timeout=10).status_code == 200
        assert httpx.get(gw.base_url + "/metrics/recent", timeout=10).json() == {"data": []}


def test_metrics_turned_off(tmp_path):
    with gateway(tmp_path, extra="metrics: {enabled: false}") as gw:
        assert "record_metrics" not in gw.gateway.front.stage_names
        assert client(gw).messages.create(model="oa:gpt-4o", max_tokens=20, messages=USER).content[0].text
        for path in ("/metrics", "/metrics/running-totals", "/metrics/recent"):
            assert httpx.get(gw.base_url + path, timeout=10).status_code == 404


def test_recent_is_bounded_a_bad_limit_is_refused_and_openmetrics_is_negotiated(tmp_path):
    with gateway(tmp_path, extra="metrics: {recent: 3}") as gw:
        r = httpx.get(gw.base_url + "/metrics/recent?limit=lots", timeout=10)
        assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
        c = client(gw)
        for _ in range(5):
            c.messages.create(model="an:claude-x", max_tokens=20, messages=USER)
        assert len(recent(gw)) == 3  # metrics.recent bounds the ring
        r = httpx.get(gw.base_url + "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"},
                      timeout=10)
        assert r.headers["content-type"].startswith("application/openmetrics-text")
        fams = {f.name: f for f in openmetrics_families(r.text)}
        assert sum(s.value for s in fams["vandamme_requests"].samples if s.name == "vandamme_requests_total") == 5


def test_model_labels_are_bounded(tmp_path):
    with gateway(tmp_path, extra="metrics: {max_models: 2}") as gw:
        c = client(gw)
        for model in ("an:m1", "an:m2", "an:m3", "an:m4", "an:m1"):
            c.messages.create(model=model, max_tokens=20, messages=USER)
        fams = scrape(gw)
        models = {s.labels["model"] for s in fams["vandamme_requests"] if s.name == "vandamme_requests_total"}
        assert models == {"m1", "m2", "_other"}
        assert value(fams, "vandamme_requests_total", model="_other") == 2
        assert value(fams, "vandamme_requests_total", model="m1") == 2


# --------------------------------------------------------------------------- OTLP
def test_otlp_export_reaches_a_collector(tmp_path):
    sink = OTLPSink()
    extra = "telemetry: {otlp_endpoint: \"%s\", service_name: vdm-metrics-test}\nmetrics: {export_interval: 0.2}"
    fakes = {"oa": FakeOpenAI(), "ob": FakeOpenAI(), "an": FakeAnthropic(), "sink": sink}
    with LiveGateway(lambda u: spec_text(u, extra % u["sink"]), fakes, tmp_path) as gw:
        c = client(gw)
        for _ in range(3):
            c.messages.create(model="oa:gpt-4o", max_tokens=20, messages=USER)
        with c.messages.stream(model="an:claude-x", max_tokens=20, messages=USER) as s:
            s.get_final_message()

        def latest(name):
            found = [(res, m) for res, m in sink.metrics() if m.name == name]
            return found[-1] if found else (None, None)

        deadline = time.monotonic() + 15
        while True:
            res, duration = latest("gen_ai.client.operation.duration")
            count = sum(p.count for p in duration.histogram.data_points) if duration else 0
            if count == 4 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert count == 4, sink.metrics()
        assert res["service.name"] == "vdm-metrics-test" and res["service.instance.id"]
        assert duration.unit == "s"
        points = {tuple(sorted((a.key, a.value.string_value) for a in p.attributes)): p
                  for p in duration.histogram.data_points}
        oa = points[(("gen_ai.operation.name", "chat"), ("gen_ai.provider.name", "oa"),
                     ("gen_ai.request.model", "gpt-4o"), ("gen_ai.response.model", "gpt-4o"))]
        assert oa.count == 3 and sum(oa.bucket_counts) == 3
        assert len(oa.bucket_counts) == len(oa.explicit_bounds) + 1 and list(oa.explicit_bounds)[:4] == [
            0.001, 0.0025, 0.005, 0.01]
        _, tokens = latest("gen_ai.client.token.usage")
        assert tokens.unit == "{token}"
        used = {(attrs["gen_ai.provider.name"], attrs["gen_ai.token.type"]): p.sum for p in tokens.histogram.data_points
                for attrs in [{a.key: a.value.string_value for a in p.attributes}]}
        assert used == {("oa", "input"): 3 * IN, ("oa", "output"): 3 * OUT, ("an", "input"): IN, ("an", "output"): OUT}
        _, first = latest("gen_ai.client.operation.time_to_first_chunk")
        assert sum(p.count for p in first.histogram.data_points) == 1
        _, requests = latest("vandamme.requests")
        assert requests.sum.is_monotonic and sum(p.as_int for p in requests.sum.data_points) == 4
        status = {a.key: a.value for p in requests.sum.data_points for a in p.attributes}["http.response.status_code"]
        assert status.int_value == 200
        for payload in sink.metric_payloads:
            for secret in (OA_KEY.encode(), *(k.encode() for k in AN_KEYS), b"hello"):
                assert secret not in payload


# --------------------------------------------------------------------------- pieces
def test_histogram_quantile_interpolates_like_prometheus():
    inf = float("inf")
    buckets = [(0.1, 10.0), (0.2, 20.0), (0.4, 40.0), (inf, 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.2)
    assert histogram_quantile(0.25, buckets) == pytest.approx(0.1)
    assert histogram_quantile(0.75, buckets) == pytest.approx(0.3)
    assert histogram_quantile(0.1, buckets) == pytest.approx(0.04)  # from 0 in the first bucket
    assert histogram_quantile(0.99, [(1.0, 1.0), (inf, 100.0)]) == 1.0  # in +Inf: the highest bound
    assert histogram_quantile(0.5, [(1.0, 0.0), (inf, 0.0)]) is None


def test_stream_error_type_reads_the_last_chunk_only():
    assert stream_error_type(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n") is None
    assert stream_error_type(b"event: ping\ndata: {}\n\n" + error_event("overloaded_error", "x")) == "overloaded_error"
    upstream_own = b'event:error\ndata: {"type": "error", "error": {"message": "m", "type": "rate_limit_error"}}\n\n'
    assert stream_error_type(upstream_own) == "rate_limit_error"
    assert stream_error_type(b'event: error\ndata: {"error": {"type": "made_up_by_upstream"}}\n\n') == "api_error"
    assert stream_error_type(b"") is None


def test_model_label_guard():
    labels = ModelLabels(2)
    assert [labels(m) for m in ("a", "b", "c", "a", "x" * 300, None, "")] == ["a", "b", "_other", "a", "_other", "", ""]


def test_finish_runs_once_and_a_failing_callback_never_reaches_the_request():
    from vandamme.transforms.anthropic_answer import AnswerFacts
    from vandamme.kernel import Context

    ctx = Context("req_x", b"{}", {})
    seen = []

    def broken(c):
        raise RuntimeError("a bug in a telemetry callback")

    facts = AnswerFacts()
    facts.input_tokens, facts.output_tokens, facts.stop_reason, facts.model = 5, 3, "end_turn", "m-2024"
    ctx.answer_facts = facts
    ctx.on_finish += [broken, lambda c: seen.append((c.status, c.error_type, c.input_tokens, c.output_tokens,
                                                     c.finish_reason, c.response_model))]
    ctx.finish(200)
    ctx.finish(500, "api_error")  # only the first call counts
    assert seen == [(200, None, 5, 3, "end_turn", "m-2024")]
    assert ctx.finished_at is not None and ctx.status == 200

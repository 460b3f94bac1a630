"""The dashboard (/dashboard/, vandamme/engine/dashboard.py): its state endpoint and static files over HTTP,
and the page itself in headless Debian chromium (driven by Playwright, never a downloaded browser)
in front of a live gateway with real traffic from the official anthropic SDK: the figures it shows
must be those of /metrics/running-totals, its last-requests table must list the requests sent, and
no key may appear in it. The browser test saves a screenshot to build/dashboard.png
(docs/operations.md, "Dashboard")."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from datetime import datetime

import anthropic
import httpx
import pytest

from vandamme.engine.version import VERSION
from fakes.anthropic_upstream import AnthropicReply, FakeAnthropic
from fakes.openai_upstream import FakeOpenAI, Reply
from harness import ROOT, LiveGateway

SCREENSHOT = ROOT / "build" / "dashboard.png"
OPENAI_KEY = "sk-openai-secret-0123456789abcdef"
ANTHROPIC_KEYS = ("sk-ant-secret-first-0123456789", "sk-ant-secret-second-0123456789")
GATEWAY_KEY = "vdm-gateway-key-0123456789abcdef"
MARKUP_MODEL = '<img src=x onerror="document.title=1">haiku'  # resolves by the `haiku` alias; shown as text
ALL_KEYS = (OPENAI_KEY, *ANTHROPIC_KEYS, GATEWAY_KEY)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def spec_text(urls, auth: bool = False) -> str:
    server = (f"server:\n  auth:\n    keys:\n      - {{name: ops, key: \"{GATEWAY_KEY}\"}}\n" if auth else "")
    return f"""
version: 1
{server}default_provider: openai
providers:
  openai:
    format: openai
    base_url: {urls['openai']}
    api_keys: ["{OPENAI_KEY}"]
    aliases: {{fast: gpt-4o-mini}}
  anthropic:
    format: anthropic
    base_url: {urls['anthropic']}
    api_keys: ["{ANTHROPIC_KEYS[0]}", "{ANTHROPIC_KEYS[1]}"]
  groq:
    format: openai
    base_url: https://api.groq.com/openai/v1
aliases:
  haiku: openai:gpt-4o-mini
  sonnet: anthropic:claude-sonnet-4-5
routes:
  - match: {{model: "*opus*"}}
    to: anthropic:claude-opus-4-1
    fallbacks: [openai:gpt-4o]
middleware:
  - inject_system: {{text: "Be brief."}}
"""


@contextmanager
def gateway(tmp_path, auth: bool = False):
    fakes = {"openai": FakeOpenAI(), "anthropic": FakeAnthropic()}
    with LiveGateway(lambda urls: spec_text(urls, auth), fakes, tmp_path) as gw:
        gw.fakes = fakes
        yield gw


def get(gw, path: str, **headers) -> httpx.Response:
    return httpx.get(gw.base_url + path, headers=headers, timeout=10, follow_redirects=False)


def assert_no_key(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text
        assert key[-12:] not in text  # not even a tail of one


# ---------------------------------------------------------------- state endpoint and files (no browser)

def test_state_endpoint_tells_providers_aliases_routes_graph_and_generation(tmp_path):
    with gateway(tmp_path) as gw:
        r = get(gw, "/dashboard/state.json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert_no_key(r.text)
        s = r.json()
    assert s["version"] == VERSION
    assert s["generation"] == 1
    assert datetime.fromisoformat(s["loaded_at"].replace("Z", "+00:00")) <= datetime.fromisoformat(
        s["now"].replace("Z", "+00:00"))
    assert s["auth"] is False and s["default_provider"] == "openai"
    providers = {p["name"]: p for p in s["providers"]}
    assert providers["openai"] == {
        "name": "openai", "format": "openai", "base_url": gw.fakes["openai"].base_url.rstrip("/"),
        "active": True, "inactive_reason": None, "keys": 1, "keys_cooling": 0, "middleware": []}
    assert providers["anthropic"]["keys"] == 2 and providers["anthropic"]["format"] == "anthropic"
    assert providers["groq"]["active"] is False
    assert providers["groq"]["inactive_reason"] == "no API key: set GROQ_API_KEY"
    aliases = {(a["scope"], a["name"]): a for a in s["aliases"]}
    assert aliases[("global", "haiku")]["target"] == "openai:gpt-4o-mini"
    assert aliases[("openai", "fast")]["active"] is True
    assert "gateway.yaml:" in aliases[("global", "sonnet")]["source"]  # where it was declared
    [route] = s["routes"]
    assert route["to"] == "anthropic:claude-opus-4-1" and route["fallbacks"] == ["openai:gpt-4o"]
    assert route["match"] == {"model": "*opus*"}
    graph = s["graph"]
    front = [st["name"] for st in graph["front"]["stages"]]
    assert {"parse", "validate", "resolve_target"} <= set(front)
    stages = [st["name"] for st in graph["providers"]["openai"]["pipelines"]["messages"]["stages"]]
    assert "inject_system" in stages and "upstream" in stages


def test_state_shows_keys_in_cooldown_and_a_new_generation_after_reload(tmp_path):
    with gateway(tmp_path) as gw:
        gw.fakes["anthropic"].enqueue(AnthropicReply(status=429, headers={"retry-after": "300"}, error_body={
            "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0, timeout=10)
        msg = c.messages.create(model="sonnet", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text  # the second key answered
        s = get(gw, "/dashboard/state.json").json()
        providers = {p["name"]: p for p in s["providers"]}
        assert providers["anthropic"]["keys_cooling"] == 1 and providers["openai"]["keys_cooling"] == 0
        live = gw.app.ctx.live
        live.reloader = lambda: gw.gateway  # recompiling is tested elsewhere: here, a new generation
        first = s["loaded_at"]
        time.sleep(0.01)
        assert gw.call(live.reload()) is True
        s = get(gw, "/dashboard/state.json").json()
        assert s["generation"] == 2 and s["loaded_at"] > first


def test_static_files_are_served_with_a_strict_policy_and_nothing_else(tmp_path):
    with gateway(tmp_path) as gw:
        r = get(gw, "/dashboard")
        assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/dashboard/"
        page = get(gw, "/dashboard/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        csp = page.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "connect-src 'self'" in csp
        assert 'data-testid="totals-providers"' in page.text and 'src="app.js"' in page.text
        for name, ctype in (("app.js", "text/javascript"), ("app.css", "text/css"),
                            ("uPlot.iife.min.js", "text/javascript"), ("uPlot.min.css", "text/css")):
            r = get(gw, f"/dashboard/{name}")
            assert r.status_code == 200 and r.headers["content-type"].startswith(ctype), name
        app_js = get(gw, "/dashboard/app.js").text
        assert ".innerHTML" not in app_js and "insertAdjacentHTML" not in app_js
        for path in ("/dashboard/README.md", "/dashboard/nope.js", "/dashboard/..%2Fserver.py",
                     "/dashboard/%2e%2e/dashboard.py"):
            r = get(gw, path)
            assert r.status_code == 404, path
            assert r.json()["type"] == "error"


def test_state_needs_the_gateway_key_when_auth_is_on_and_the_page_does_not(tmp_path):
    with gateway(tmp_path, auth=True) as gw:
        assert get(gw, "/dashboard/").status_code == 200  # the page and its files hold no data
        assert get(gw, "/dashboard/app.js").status_code == 200
        refused = get(gw, "/dashboard/state.json")
        assert refused.status_code == 401
        assert refused.json()["error"]["type"] == "authentication_error"
        assert get(gw, "/dashboard/state.json", **{"x-vandamme-key": "wrong-key-0123456789"}).status_code == 401
        ok = get(gw, "/dashboard/state.json", **{"x-vandamme-key": GATEWAY_KEY})
        assert ok.status_code == 200 and ok.json()["auth"] is True
        assert_no_key(ok.text)
        assert get(gw, "/dashboard/state.json", authorization=f"Bearer {GATEWAY_KEY}").status_code == 200


# ---------------------------------------------------------------- the page in headless chromium

def _chromium() -> str:
    path = os.environ.get("VDM_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.skip("Debian's chromium is not installed (`make chromium` installs it; apt-get may be "
                    "unreachable here): the dashboard browser test needs it")
    return path


@contextmanager
def browser():
    """A Playwright page in Debian's chromium, with a fresh profile."""
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    with tempfile.TemporaryDirectory(prefix="vdm-chromium-") as profile, sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=executable, headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 900}, timeout=60_000)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.set_default_timeout(20_000)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            yield page
        finally:
            context.close()


def ticks(page) -> int:
    return int(page.get_attribute('[data-testid="status"]', "data-tick") or 0)


def wait_ticks(page, at_least: int, limit: float = 20.0) -> None:
    """Until the page has finished ``at_least`` refreshes (bounded; polled from Python: the page's
    CSP rightly forbids the string evaluation Playwright's wait_for_function uses)."""
    deadline = time.monotonic() + limit
    while ticks(page) < at_least:
        assert time.monotonic() < deadline, f"the page did not refresh {at_least} times in {limit} s"
        time.sleep(0.1)


def need_metrics(gw) -> None:
    r = get(gw, "/metrics/running-totals")
    if r.status_code == 404:
        pytest.skip("/metrics/running-totals is not served (vandamme/engine/metrics.py missing): nothing to compare")
    assert r.status_code == 200, r.text


def send_traffic(gw, between=lambda: None) -> list[tuple[str, str, int]]:
    """Real requests through the anthropic SDK: buffered and streamed, converted and passthrough,
    a key failover, upstream errors and a request the gateway refuses itself, in two bursts with
    ``between()`` called between them. Returns (request id, model asked, status) for each."""
    openai_fake, anthropic_fake = gw.fakes["openai"], gw.fakes["anthropic"]
    c = anthropic.Anthropic(base_url=gw.base_url, api_key="client-key", max_retries=0, timeout=10)
    sent = []
    msgs = [{"role": "user", "content": "hello"}]

    def create(model):
        raw = c.messages.with_raw_response.create(model=model, max_tokens=50, messages=msgs)
        assert raw.parse().content[0].text
        sent.append((raw.headers["request-id"], model, 200))

    def stream(model):
        s = c.messages.create(model=model, max_tokens=50, messages=msgs, stream=True)
        events = [e.type for e in s]
        assert events[-1] == "message_stop"
        sent.append((s.response.headers["request-id"], model, 200))

    def failing(model, status):
        with pytest.raises(anthropic.APIStatusError) as info:
            c.messages.create(model=model, max_tokens=50, messages=msgs)
        assert info.value.status_code == status
        sent.append((info.value.request_id, model, status))

    for _ in range(3):
        create("haiku")
    create(MARKUP_MODEL)
    stream("haiku")
    stream("fast")
    between()
    create("sonnet")
    stream("sonnet")
    stream("sonnet")
    anthropic_fake.enqueue(AnthropicReply(status=429, headers={"retry-after": "300"}, error_body={
        "type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}))
    create("sonnet")  # the first key is refused (429, cooled down), the second answers
    openai_fake.enqueue(Reply(status=400, error_message="upstream says no"))
    failing("haiku", 400)
    anthropic_fake.enqueue(AnthropicReply(status=404, error_body={
        "type": "error", "error": {"type": "not_found_error", "message": "no such model"}}))
    failing("sonnet", 404)
    with pytest.raises(anthropic.BadRequestError) as info:  # refused by the gateway: no messages
        c.messages.create(model="haiku", max_tokens=50, messages=[])
    sent.append((info.value.request_id, "haiku", 400))
    return sent


def stable_totals(gw) -> dict:
    """/metrics/running-totals once the traffic has settled (no stream open, two reads equal)."""
    last = None
    for _ in range(100):
        now = get(gw, "/metrics/running-totals").json()
        if now == last and not now["overall"]["active_streams"]:
            return now
        last = now
        time.sleep(0.1)
    raise AssertionError(f"running totals did not settle: {last}")


def shown_int(page, selector: str) -> int:
    text = page.text_content(selector)
    assert text is not None, selector
    return int(text.replace(",", ""))


def shown_ms(page, selector: str) -> float | None:
    text = page.text_content(selector)
    return None if text == "–" else float(text)


def test_dashboard_in_chromium_shows_running_totals_recent_requests_and_no_key(tmp_path):
    with gateway(tmp_path) as gw:
        need_metrics(gw)
        with browser() as page:
            page.goto(gw.base_url + "/dashboard/")
            wait_ticks(page, 2)
            # traffic while the page watches, so that its charts have something to draw
            sent = send_traffic(gw, between=lambda: wait_ticks(page, ticks(page) + 1))
            wait_ticks(page, ticks(page) + 1)
            totals = stable_totals(gw)
            wait_ticks(page, ticks(page) + 2)  # a full refresh that began after `totals` was read
            assert page.get_attribute('[data-testid="status"]', "data-state") == "ok", \
                page.text_content('[data-testid="status"]')
            assert stable_totals(gw) == totals  # nothing moved meanwhile: the page shows these

            # overall tiles
            for field in ("requests", "errors", "input_tokens", "output_tokens", "active_streams"):
                assert shown_int(page, f'[data-testid="overall-{field}"]') == totals["overall"][field], field
            # per provider and per model
            for kind in ("providers", "models"):
                table = f'[data-testid="totals-{kind}"]'
                names = page.eval_on_selector_all(f"{table} tbody tr[data-name]",
                                                  "rows => rows.map(r => r.dataset.name)")
                assert sorted(names) == sorted(totals[kind]), kind
                for name, t in totals[kind].items():
                    row = f'{table} tr[data-name="{name}"]'
                    for field in ("requests", "errors", "input_tokens", "output_tokens", "active_streams"):
                        assert shown_int(page, f'{row} td[data-field="{field}"]') == t[field], (name, field)
                    for p in ("p50", "p95", "p99"):
                        shown, want = shown_ms(page, f'{row} td[data-field="{p}"]'), t["latency_ms"][p]
                        assert (shown is None) == (want is None), (name, p)
                        if want is not None:
                            assert abs(shown - want) <= 0.051, (name, p, shown, want)
            assert totals["providers"]["openai"]["requests"] >= 5 and totals["providers"]["anthropic"]["requests"] >= 5
            assert totals["overall"]["errors"] >= 2

            # the last requests: every one sent, with what was asked and how it ended
            recent = get(gw, "/metrics/recent").json()["data"]
            assert page.locator('[data-testid="recent-row"]').count() == len(recent)
            for rid, model, status in sent:
                row = f'[data-testid="recent-row"][data-request-id="{rid}"]'
                assert page.locator(row).count() == 1, rid
                assert page.text_content(f'{row} td[data-field="model_asked"]') == model
                assert page.text_content(f'{row} td[data-field="status"]').split()[0] == str(status)
            assert page.locator('[data-testid="recent"] img').count() == 0  # text, never markup
            rid = sent[0][0]
            target = page.text_content(f'[data-testid="recent-row"][data-request-id="{rid}"] td[data-field="target"]')
            assert target == "openai:gpt-4o-mini"

            # state: providers, aliases, routes, graph, generation
            assert page.text_content('[data-testid="version"]') == f"v{VERSION}"
            assert page.text_content('[data-testid="generation"]') == "1"
            groq = '[data-testid="provider-row"][data-name="groq"]'
            assert "inactive: no API key: set GROQ_API_KEY" in page.text_content(f'{groq} td[data-field="state"]')
            cooling = '[data-testid="provider-row"][data-name="anthropic"] td[data-field="keys_cooling"]'
            assert page.text_content(cooling) == "1"
            assert page.locator('[data-testid="alias-row"][data-name="haiku"]').count() == 1
            assert page.locator('[data-testid="route-row"]').count() == 1
            assert page.locator('[data-testid="graph"] [data-stage="inject_system"]').count() >= 2
            # charts drawn by uPlot (history starts at the second refresh)
            for chart in ("rate", "tokens", "errors", "latency"):
                assert page.locator(f'[data-testid="chart-{chart}"] canvas').count() == 1, chart

            assert_no_key(page.content())
            assert page.errors == []
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            print(f"dashboard screenshot: {SCREENSHOT}")
    assert SCREENSHOT.stat().st_size > 20_000


def test_dashboard_in_chromium_asks_for_the_gateway_key_when_auth_is_on(tmp_path):
    with gateway(tmp_path, auth=True) as gw:
        with browser() as page:
            page.goto(gw.base_url + "/dashboard/")
            wait_ticks(page, 1)
            assert page.get_attribute('[data-testid="status"]', "data-state") == "auth"
            assert page.is_visible('[data-testid="key-form"]')
            page.fill("#key-input", GATEWAY_KEY)
            page.click('[data-testid="key-form"] button')
            deadline = time.monotonic() + 20
            while page.text_content('[data-testid="generation"]') != "1":
                assert time.monotonic() < deadline, page.text_content('[data-testid="status"]')
                time.sleep(0.1)
            assert page.text_content('[data-testid="auth"]') == "on"
            assert not page.is_visible('[data-testid="key-form"]')
            assert page.locator('[data-testid="provider-row"]').count() == 3
            assert_no_key(page.content())
            assert page.errors == []

"""Header templates (jinja2, sandboxed) and CR/LF rejection."""
import subprocess
import sys

import anthropic
import httpx

from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway


def spec(urls):
    return f"""
version: 1
default_provider: up
headers:
  X-Global: global-value
  X-Overridden: from-global
providers:
  up:
    format: anthropic
    base_url: "{urls['up']}"
    api_keys: [k-123456789abc]
    client_headers: [x-team]
    headers:
      X-Overridden: from-provider
      X-Req: "{{{{ request.id }}}}"
      X-Route: "{{{{ provider }}}}/{{{{ model }}}}"
      X-Team: "{{{{ headers['x-team'] | default('none', true) }}}}"
      X-Api-Key: "{{{{ 'must-not-win' }}}}"
"""


def test_templates_render_per_request(tmp_path):
    up = FakeAnthropic()
    with LiveGateway(spec, {"up": up}, tmp_path, environ={"CUSTOM_HEADER_X_FROM_ENV": "env-value"}) as gw:
        c = anthropic.Anthropic(base_url=gw.base_url, api_key="x", max_retries=0, timeout=10)
        raw = c.messages.with_raw_response.create(model="claude-x", max_tokens=5, extra_headers={"x-team": "blue"},
                                                  messages=[{"role": "user", "content": "x"}])
        sent = up.requests[-1]["headers"]
        assert sent["X-Req"] == raw.headers["request-id"]
        assert sent["X-Route"] == "up/claude-x"
        assert sent["X-Team"] == "blue"
        assert sent["X-Global"] == "global-value"
        assert sent["X-From-Env"] == "env-value"
        assert sent["X-Overridden"] == "from-provider"
        assert sent["x-api-key"] == "k-123456789abc"  # auth is set after templates
        c.messages.create(model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "x"}])
        assert up.requests[-1]["headers"]["X-Team"] == "none"


def test_runtime_crlf_is_refused_without_traceback(tmp_path):
    up = FakeAnthropic()
    bad = lambda u: f"""
version: 1
default_provider: up
providers:
  up:
    format: anthropic
    base_url: "{u['up']}"
    api_keys: [k-123456789abc]
    headers: {{X-Bad: "{{{{ request.id }}}}{{{{ '\\\\r\\\\nX-Evil: 1' }}}}"}}
"""
    with LiveGateway(bad, {"up": up}, tmp_path) as gw:
        r = httpx.post(gw.base_url + "/v1/messages", timeout=10,
                       json={"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]})
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "api_error"
        assert "X-Bad" in r.json()["error"]["message"] and "Traceback" not in r.text
        assert not up.requests


def test_constant_crlf_and_bad_template_fail_validation(tmp_path):
    (tmp_path / "a.yaml").write_text(
        'version: 1\nproviders:\n  p:\n    format: openai\n    base_url: "http://h/v1"\n'
        '    headers:\n      X-A: "{{ \'a\\\\r\\\\nb\' }}"\n      X-B: "{{ unclosed"\n')
    r = subprocess.run([sys.executable, "-m", "vandamme.engine.cli", "validate", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "providers.p.headers" in r.stderr
    assert "CR/LF" in r.stderr or "template" in r.stderr

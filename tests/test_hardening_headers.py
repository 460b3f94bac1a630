"""Header templates (vandamme/transforms/headers.py): names outside the documented variables, templates
loading other templates and huge values are spec errors at file:line:col (never a traceback);
per-request failures are clean errors; ``request`` exposes its id only; a client header value
with control characters is the client's error (400)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys

import httpx
import pytest

from vandamme.engine.cli import main
from fakes.anthropic_upstream import FakeAnthropic
from harness import LiveGateway
from vandamme.transforms.headers import MAX_VALUE

PROVIDER = """version: 1
default_provider: p
providers:
  p:
    format: openai
    base_url: "http://127.0.0.1:9/v1"
    requires_key: false
    headers:
      X-Fine: "{{ request.id }}"
"""
FIRST_BAD_LINE = 10

BAD = [
    ("{{ environ }}", "unknown variable 'environ'; header templates may use request, provider, model, "
                      "requested_model, headers"),
    ("{{ range(200000) }}", "unknown variable 'range'"),
    ("{{ lipsum(100000) }}", "unknown variable 'lipsum'"),
    ("{% include 'x.yaml' %}", "{% include %} is not allowed in a header template"),
    ("{% import 'x' as x %}", "{% import %} is not allowed in a header template"),
    ("{% from 'x' import y %}", "{% from ... import %} is not allowed in a header template"),
    ("{% extends 'x' %}", "{% extends %} is not allowed in a header template"),
    ("{{ 'x' * 100000 }}", f"cannot be rendered (SecurityError): '*' would build a value longer than {MAX_VALUE}"),
    ("{{ 'ab' | center(100000) }}", f"renders more than {MAX_VALUE} characters"),
    ("{{ 9 ** 99999999 }}", "cannot be rendered (SecurityError): exponent larger than"),
    ("{{ '\\x00' }}", "renders a value with control characters"),
    ("{{ unclosed", "invalid jinja2 template"),
]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> str:
    """`vandamme validate` of a spec with every bad template above, one header each (bounded: on
    the code before this change, some of them crashed it and ``9 ** 99999999`` stalled it)."""
    folder = tmp_path_factory.mktemp("specs")
    bad = "".join(f"      X-Bad{i}: {json.dumps(t)}\n" for i, (t, _) in enumerate(BAD))
    (folder / "s.yaml").write_text(PROVIDER + bad)
    proc = subprocess.run([sys.executable, "-m", "vandamme.engine.cli", "validate", str(folder)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    return proc.stdout + proc.stderr


@pytest.mark.parametrize("i", range(len(BAD)), ids=[t for t, _ in BAD])
def test_bad_templates_are_spec_errors_at_their_position(report, i):
    assert "Traceback" not in report and "X-Fine" not in report
    assert f"s.yaml:{FIRST_BAD_LINE + i}:7: providers.p.headers.X-Bad{i}: {BAD[i][1]}" in report, report


def test_global_header_templates_are_checked_too(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(PROVIDER + 'headers:\n  X-G: "{{ os }}"\n')
    assert main(["validate", str(tmp_path)]) == 1
    assert "s.yaml:11:3: headers.X-G: unknown variable 'os'" in capsys.readouterr().err


def test_run_refuses_a_template_that_includes(tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(PROVIDER + "      X-Bad: \"{% include '/etc/passwd' %}\"\n")
    assert main(["run", str(tmp_path)]) == 1
    assert "{% include %} is not allowed" in capsys.readouterr().err


def spec(u):
    return f"""
version: 1
default_provider: up
providers:
  up:
    format: anthropic
    base_url: "{u['up']}"
    api_keys: [k-123456789abc]
    client_headers: [x-team]
    headers:
      X-Request: "{{{{ request }}}}"
      X-Team: "{{{{ headers['x-team'] }}}}{{{{ headers['x-team'] }}}}"
"""


@pytest.fixture
def live(tmp_path):
    up = FakeAnthropic()
    with LiveGateway(spec, {"up": up}, tmp_path) as gw:
        yield gw, up


BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}


def test_request_renders_as_its_id_only(live):
    gw, up = live
    r = httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=10, headers={"x-team": "blue"})
    assert r.status_code == 200
    sent = up.requests[-1]["headers"]
    assert sent["X-Request"] == str({"id": r.headers["request-id"]})
    assert sent["X-Team"] == "blueblue"


def test_a_per_request_value_over_the_limit_is_a_clean_error(live, caplog):
    gw, up = live
    r = httpx.post(gw.base_url + "/v1/messages", json=BODY, timeout=10, headers={"x-team": "x" * 5000})
    assert r.status_code == 500
    assert r.json() == {"type": "error", "error": {"type": "api_error", "message":
                        f"header 'X-Team' renders more than {MAX_VALUE} characters; not sent"}}
    assert not up.requests and "Traceback" not in caplog.text


def raw_request(port: int, header: bytes) -> tuple[int, dict]:
    body = json.dumps(BODY).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
                  + header + b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    status_line, _, rest = raw.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


@pytest.mark.parametrize("value", [b"a\x00b", b"a\rb", b"a\nX-Evil: 1", b"a\x01b", b"a\x7f"])
@pytest.mark.parametrize("name", [b"x-team", b"anthropic-beta"])
def test_control_characters_in_a_client_header_read_upstream_are_a_400(live, name, value):
    gw, up = live
    status, err = raw_request(int(gw.base_url.rsplit(":", 1)[1]), name + b": " + value)
    assert status == 400, err
    assert err == {"type": "error", "error": {"type": "invalid_request_error",
                                              "message": f"header {name.decode()!r} contains control characters"}}
    assert not up.requests

"""`vandamme run --log-format journal`: log records go to systemd's journal over its native
protocol, the request fields as journal fields; where there is no journal, text on the console
with one warning.

There is no systemd-journald on these machines, so the journal test binds the journal's socket
itself (a datagram socket at /run/systemd/journal/socket, where libsystemd sends) and reads what a
real `vandamme run` process writes there: the same bytes journald would receive. It skips when a
real journal socket already exists (it would not touch a running journald)."""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from harness import ROOT, free_port

JOURNAL = Path("/run/systemd/journal/socket")


def spec_dir(tmp_path: Path) -> Path:
    d = tmp_path / "specs"
    d.mkdir()
    (d / "spec.yaml").write_text("""
version: 1
logging: {access_log: true}
default_provider: openai
providers:
  openai: {format: openai, base_url: "http://127.0.0.1:9/v1", api_keys: [sk-journal-test-key-000111]}
""")
    return d


def start(tmp_path: Path, port: int) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    return subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", "run", str(spec_dir(tmp_path)), "--port", str(port),
                             "--log-format", "journal"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_health(proc: subprocess.Popen, port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise AssertionError("gateway did not start")


def stop(proc: subprocess.Popen) -> tuple[str, str]:
    proc.terminate()
    try:
        return proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.communicate()


def parse_native(datagram: bytes) -> dict[str, str]:
    """systemd's native journal protocol: ``KEY=value\\n``, or ``KEY\\n`` + 64-bit little-endian
    length + value + ``\\n`` for values holding a newline."""
    fields, i = {}, 0
    while i < len(datagram):
        nl = datagram.index(b"\n", i)
        line = datagram[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            fields[k.decode()] = v.decode()
            i = nl + 1
        else:
            (size,) = struct.unpack("<Q", datagram[nl + 1:nl + 9])
            fields[line.decode()] = datagram[nl + 9:nl + 9 + size].decode()
            i = nl + 9 + size + 1
    return fields


def test_records_reach_the_journal_with_the_request_fields(tmp_path):
    pytest.importorskip("cysystemd", reason="the 'journal' extra (cysystemd) is not installed")
    if JOURNAL.exists():
        pytest.skip(f"{JOURNAL} exists (a real journald): not replaced by a test")
    try:
        JOURNAL.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        pytest.skip(f"cannot create {JOURNAL.parent}: {exc}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(JOURNAL))
    sock.settimeout(0.2)
    port = free_port()
    proc = start(tmp_path, port)
    records: list[dict] = []
    try:
        wait_health(proc, port)
        r = httpx.post(f"http://127.0.0.1:{port}/v1/messages", json={"model": "x"}, timeout=10)
        assert r.status_code == 400
        rid = r.headers["request-id"]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(f.get("REQUEST_ID") == rid for f in records):
            try:
                records.append(parse_native(sock.recv(1 << 20)))
            except socket.timeout:
                pass
        _, err = stop(proc)
    finally:
        if proc.poll() is None:
            stop(proc)
        sock.close()
        JOURNAL.unlink(missing_ok=True)
    assert any("listening on" in f.get("MESSAGE", "") for f in records), records
    for f in records:
        assert f["SYSLOG_IDENTIFIER"] == "vandamme" and f["PRIORITY"] in "234567"
    (line,) = [f for f in records if f.get("REQUEST_ID") == rid]
    assert line["STATUS"] == "400" and line["PRIORITY"] == "4"  # the access line of a refused request: warning
    assert "sk-journal-test-key" not in repr(records)
    assert "listening on" not in err  # the records went to the journal, not to the console


def test_without_a_journal_it_logs_to_the_console_with_one_warning(tmp_path):
    if JOURNAL.exists():
        pytest.skip(f"{JOURNAL} exists here: the fallback cannot be seen")
    port = free_port()
    proc = start(tmp_path, port)
    try:
        wait_health(proc, port)
    finally:
        _, err = stop(proc)
    warnings = [ln for ln in err.splitlines() if "log format 'journal' asked for" in ln]
    assert len(warnings) == 1, err
    assert "logging to the console instead" in warnings[0]
    assert "vandamme listening on" in err

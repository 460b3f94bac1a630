"""deploy/systemd/vandamme.service: parsed and checked for the hardening and lifecycle settings the
deploy docs promise, then `systemd-analyze verify` and `systemd-analyze security --offline` when
systemd-analyze is installed. The unit is verified, not started: no systemd runs as PID 1 here.
"""
from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import ROOT

UNIT = ROOT / "deploy" / "systemd" / "vandamme.service"


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """systemd's unit syntax: [Section], Key=Value lines (a key may repeat), # and ; comments."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        assert not line.endswith("\\"), f"line {number}: continuation lines are not used here"
        if line.startswith("["):
            assert line.endswith("]"), f"line {number}: {raw}"
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None, f"line {number}: a setting outside any section"
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), f"line {number}: {raw}"
        current.append((key.strip(), value.strip()))
    return sections


@pytest.fixture(scope="module")
def unit() -> dict[str, list[tuple[str, str]]]:
    return parse_unit(UNIT.read_text())


def values(unit, section: str, key: str) -> list[str]:
    return [v for k, v in unit[section] if k == key]


def last(unit, section: str, key: str) -> str:
    found = values(unit, section, key)
    assert found, f"[{section}] {key}= is missing"
    return found[-1]


def _seconds(value: str) -> float:
    units = {"min": 60, "ms": 0.001, "s": 1, "h": 3600, "": 1}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(min|ms|s|h|)", value)
    assert parts, value
    return sum(float(n) * units[u] for n, u in parts)


def test_unit_sections(unit):
    assert set(unit) == {"Unit", "Service", "Install"}
    assert last(unit, "Install", "WantedBy") == "multi-user.target"
    assert "network-online.target" in last(unit, "Unit", "After")


def test_unit_runs_and_reloads_the_gateway(unit):
    exec_start = shlex.split(last(unit, "Service", "ExecStart"))
    assert exec_start[0] == "/usr/local/bin/vandamme" and exec_start[1:] == ["run", "/etc/vandamme/specs"]
    assert last(unit, "Service", "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert last(unit, "Service", "Restart") == "on-failure"
    assert last(unit, "Service", "EnvironmentFile") == "-/etc/vandamme/vandamme.env"
    # The stop timeout covers the drain deadline and Sanic's connection close.
    schema = json.loads((ROOT / "schemas" / "vandamme.schema.json").read_text())
    drain = schema["properties"]["server"]["properties"]["drain_timeout"]["default"]
    assert _seconds(last(unit, "Service", "TimeoutStopSec")) > drain + 5


def test_unit_is_hardened(unit):
    service = "Service"
    assert last(unit, service, "DynamicUser") == "yes" or values(unit, service, "User")
    for key, expected in {"ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
                          "NoNewPrivileges": "yes", "CapabilityBoundingSet": "",
                          "PrivateDevices": "yes", "RestrictSUIDSGID": "yes"}.items():
        assert last(unit, service, key) == expected, key
    assert set(last(unit, service, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    filters = values(unit, service, "SystemCallFilter")
    assert "@system-service" in filters


def _systemd_analyze() -> str:
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (Debian's systemd package): the unit was only "
                    "parsed, not verified")
    return tool


def _runnable_copy(tmp_path: Path) -> Path:
    """`verify` insists that ExecStart's program exists; /usr/local/bin/vandamme is where a system
    install puts it, not where this checkout has it. The copy names this environment's console
    script instead; nothing else is changed."""
    script = Path(sys.executable).parent / "vandamme"
    if not script.exists():
        pytest.skip(f"no vandamme console script beside {sys.executable} to stand in for ExecStart")
    text = UNIT.read_text()
    copy, count = re.subn(r"^ExecStart=/usr/local/bin/vandamme ", f"ExecStart={script} ", text, flags=re.M)
    assert count == 1
    path = tmp_path / "vandamme.service"
    path.write_text(copy)
    return path


def test_systemd_analyze_verify(tmp_path):
    tool = _systemd_analyze()
    path = _runnable_copy(tmp_path)
    result = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True, timeout=120)
    # verify also exits 0 on unknown keys and unparsable values (it only warns): none may be
    # reported for this unit. Lines about other units of the machine are not ours to judge.
    ours = [line for line in (result.stdout + result.stderr).splitlines()
            if "vandamme.service" in line or str(tmp_path) in line]
    assert result.returncode == 0 and not ours, result.stdout + result.stderr


def test_systemd_analyze_security_exposure(tmp_path):
    tool = _systemd_analyze()
    path = _runnable_copy(tmp_path)
    # Exposure on systemd's 0-10 scale, at most 2.0 ("OK"); --threshold takes it times ten.
    result = subprocess.run([tool, "security", "--offline=true", "--threshold=20", str(path)],
                            capture_output=True, text=True, timeout=120)
    if "offline" in result.stderr and "nrecognized" in result.stderr + result.stdout:
        pytest.skip("this systemd-analyze has no `security --offline` (systemd < 250)")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert re.search(r"Overall exposure level for vandamme\.service: (?:[01]\.\d|2\.0)\b", result.stdout)

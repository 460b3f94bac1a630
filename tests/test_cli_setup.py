"""`vandamme config setup`, scripted with flags and interactive (answers piped on stdin, and on a
real pseudo-terminal where the key is read without echo); every folder it writes is then checked
by `vandamme validate`, and its .env used by `vandamme health upstream` against a fake upstream."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import stat
import subprocess
import sys
import termios
import time

from harness import ROOT, run_cli
from test_cli_ops import Background, ModelsUpstream

KEY = "sk-setup-key-9999zzzz"


def run_with_input(*args, stdin: str, env=None, timeout=60) -> subprocess.CompletedProcess:
    """run_cli with answers on stdin (run_cli leaves stdin alone)."""
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "vandamme.engine.cli", *args], input=stdin, capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=timeout)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_setup_with_flags_writes_a_valid_spec_and_a_private_env(tmp_path):
    fake = ModelsUpstream("openai", KEY)
    out = tmp_path / "conf"
    with Background(fake):
        r = run_cli("config", "setup", "--out", str(out),
                    "--provider", "openai", "--base-url", fake.url, "--api-key-env", "MY_SECRET_VAR",
                    "--provider", "groq",
                    "--provider", "lab", "--format", "anthropic", "--base-url", "http://127.0.0.1:9/lab", "--passthrough",
                    "--provider", "local", "--base-url", "http://127.0.0.1:9/v1",
                    "--default", "openai", "--alias", "fast=groq:llama-3.1-8b-instant",
                    "--alias", "sonnet=openai:gpt-4.1", "--port", "9123", "--json",
                    env={"MY_SECRET_VAR": KEY})
        assert r.returncode == 0, r.stderr
        health = run_cli("health", "upstream", str(out), "--json")  # reads out/.env itself
    summary = json.loads(r.stdout)
    spec_text = (out / "vandamme.yaml").read_text()
    env_text = (out / ".env").read_text()
    assert KEY not in r.stdout + r.stderr + spec_text  # the key is in .env only
    assert f"OPENAI_API_KEY={KEY}" in env_text.splitlines()
    assert mode(out / ".env") == 0o600
    assert summary["env_vars"] == ["OPENAI_API_KEY"] and summary["default_provider"] == "openai"
    assert {p["name"]: p["key"] for p in summary["providers"]} == {
        "openai": "OPENAI_API_KEY", "groq": "not set: GROQ_API_KEY", "lab": "passthrough", "local": "none needed"}
    assert summary["aliases"] == {"haiku": "openai:gpt-4o-mini", "opus": "openai:gpt-4o",
                                  "fast": "groq:llama-3.1-8b-instant", "sonnet": "openai:gpt-4.1"}
    v = run_cli("validate", str(out), "--format", "json")
    assert v.returncode == 0, v.stdout + v.stderr
    assert json.loads(v.stdout)["providers"] == 4
    shown = run_cli("config", "show", str(out))
    assert shown.returncode == 0 and "port: 9123" in shown.stdout and "!PASSTHRU" in shown.stdout
    rows = {p["provider"]: p["result"] for p in json.loads(health.stdout)["providers"]}
    assert rows["openai"] == "ok" and "groq" not in rows  # groq has no key yet: inactive
    assert fake.requests[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    assert KEY not in health.stdout + health.stderr


def test_setup_keeps_other_variables_of_an_existing_env_and_needs_force_to_replace_a_spec(tmp_path):
    out = tmp_path / "conf"
    out.mkdir()
    (out / ".env").write_text("OTHER=kept value\n")
    os.chmod(out / ".env", 0o644)
    args = ("config", "setup", "--out", str(out), "--provider", "groq", "--api-key-env", "K")
    first = run_cli(*args, env={"K": KEY})
    again = run_cli(*args, env={"K": KEY})
    forced = run_cli(*args, "--force", env={"K": "gsk-new-key-8888yyyy"})
    assert first.returncode == 0, first.stderr
    assert again.returncode == 1 and "exists: pass --force to replace it" in again.stderr
    assert forced.returncode == 0, forced.stderr
    from vandamme.engine.cli_env import read_env_file

    assert read_env_file(out / ".env") == {"OTHER": "kept value", "GROQ_API_KEY": "gsk-new-key-8888yyyy"}
    assert mode(out / ".env") == 0o600


def test_setup_never_writes_an_invalid_folder(tmp_path):
    out = tmp_path / "conf"
    r = run_cli("config", "setup", "--out", str(out), "--provider", "openai", "--alias", "big=nowhere:model-x")
    assert r.returncode == 1
    assert "aliases.big" in r.stderr and "nothing written" in r.stderr
    assert not (out / "vandamme.yaml").exists()
    usage = [run_cli("config", "setup", "--out", str(out), "--yes"),                       # no provider
             run_cli("config", "setup", "--out", str(out), "--provider", "myco"),          # custom, no URL
             run_cli("config", "setup", "--out", str(out), "--base-url", "http://x"),      # before --provider
             run_cli("config", "setup", "--out", str(out), "--provider", "openai", "--api-key-env", "UNSET_VAR_X")]
    assert [u.returncode for u in usage] == [2, 1, 2, 1]
    assert "custom provider 'myco' needs --base-url" in usage[1].stderr
    assert "UNSET_VAR_X: that variable is not set" in usage[3].stderr
    assert not (out / "vandamme.yaml").exists()


ANSWERS = [
    "{out}",                      # spec folder
    "openai, custom, 9",          # providers: a preset, a custom one, local (by number)
    "",                           # openai base URL: the preset's
    KEY,                          # openai key
    "myco",                       # custom: name
    "anthropic",                  # custom: format
    "http://127.0.0.1:7777",      # custom: base URL
    "!PASSTHRU",                  # custom: the client's own key
    "http://127.0.0.1:11434/v1",  # local: base URL
    "",                           # local: no key
    "nope",                       # default provider: not one of them, asked again
    "openai",                     # default provider
    "",                           # haiku: the preset's
    "gpt-4.1",                    # sonnet
    "-",                          # opus: none
    "big=myco:claude-opus-4-1",   # an alias
    "bad alias",                  # not NAME=TARGET: said so, asked again
    "",                           # end of aliases
    "9000",                       # port
]


def check_interactive_result(out):
    spec_text = (out / "vandamme.yaml").read_text()
    assert KEY not in spec_text
    assert f"OPENAI_API_KEY={KEY}" in (out / ".env").read_text()
    assert mode(out / ".env") == 0o600
    v = run_cli("validate", str(out), "--format", "json")
    assert v.returncode == 0, v.stdout + v.stderr
    from ruamel.yaml import YAML

    doc = YAML(typ="safe").load(spec_text)
    assert doc["default_provider"] == "openai" and doc["server"]["port"] == 9000
    assert doc["providers"]["openai"]["aliases"] == {"haiku": "gpt-4o-mini", "sonnet": "gpt-4.1"}
    assert doc["providers"]["myco"] == {"format": "anthropic", "base_url": "http://127.0.0.1:7777",
                                        "api_keys": ["!PASSTHRU"]}
    assert doc["providers"]["local"]["requires_key"] is False
    assert doc["aliases"] == {"big": "myco:claude-opus-4-1"}


def test_setup_interactive_with_answers_piped(tmp_path):
    out = tmp_path / "asked"
    r = run_with_input("config", "setup", stdin="\n".join(ANSWERS).format(out=out) + "\n")
    assert r.returncode == 0, r.stderr
    assert "Default provider" in r.stderr and "  one of: openai, myco, local" in r.stderr
    assert "an alias is NAME=TARGET" in r.stderr
    assert r.stdout.startswith(f"wrote {out}/vandamme.yaml and {out}/.env (mode 0600; OPENAI_API_KEY)")
    check_interactive_result(out)


def test_setup_interactive_input_ending_early_writes_nothing(tmp_path):
    out = tmp_path / "asked"
    r = run_with_input("config", "setup", stdin="\n".join(ANSWERS[:5]).format(out=out) + "\n")
    assert r.returncode == 1 and "input ended" in r.stderr
    assert not out.exists()


def test_setup_interactive_on_a_terminal_reads_the_key_without_echo(tmp_path):
    """Driven through a pseudo-terminal (its controlling terminal), as a person would: each
    question answered when it has been asked; the key typed is never echoed."""
    out = tmp_path / "tty"
    answers = [a.format(out=out) for a in ANSWERS]
    master, slave = pty.openpty()
    e = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    proc = subprocess.Popen([sys.executable, "-m", "vandamme.engine.cli", "config", "setup"], stdin=slave, stdout=slave,
                            stderr=slave, env=e, cwd=ROOT, start_new_session=True,
                            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    transcript, asked_at, answered = b"", 0, 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # EIO: the program ended and closed the terminal
                    break
                if not chunk:
                    break
                transcript += chunk
            elif proc.poll() is not None:
                break
            if answered < len(answers) and transcript[asked_at:].endswith(b": "):
                os.write(master, answers[answered].encode() + b"\n")
                answered += 1
                asked_at = len(transcript)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)
    text = transcript.decode(errors="replace")
    assert proc.returncode == 0, text
    assert answered == len(answers), text
    assert "API key (hidden" in text
    assert KEY not in text  # typed at the key prompt, never echoed back
    assert "gpt-4.1" in text  # an ordinary answer is echoed by the terminal as usual
    check_interactive_result(out)


def test_env_file_values_read_back_by_sh_and_by_the_cli(tmp_path, monkeypatch):
    from vandamme.engine.cli_env import environ_for, read_env_file, write_env_file

    values = {"PLAIN": "sk-abc_123/+=", "RING": "k1-aaaa k2-bbbb", "QUOTE": "it's \"odd\" $HOME \\ x",
              "BANG": "!PASSTHRU"}
    path = tmp_path / ".env"
    write_env_file(path, values, comments=["a comment"])
    assert mode(path) == 0o600
    assert read_env_file(path) == values
    for name, value in values.items():
        r = subprocess.run(["sh", "-c", f'set -a; . "{path}"; printf %s "${name}"'], capture_output=True,
                           text=True, timeout=10, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
        assert r.stdout == value, (name, r.stdout, r.stderr)
    # the environment wins over the file, except with an empty value (unset, as for the overlays)
    monkeypatch.setenv("PLAIN", "from-env")
    monkeypatch.setenv("RING", "")
    env = environ_for(str(tmp_path))
    assert (env["PLAIN"], env["RING"]) == ("from-env", "k1-aaaa k2-bbbb")

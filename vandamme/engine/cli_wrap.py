"""`vandamme wrap claude [ARGS...]` (also installed as `claude.vdm`): Claude Code through a gateway.

1. Look for a Vandamme gateway on the configured port (``--port``, else the spec's ``server.port``
   after env overlays): ``GET /health`` must answer as Vandamme does. If one answers, use it.
2. Otherwise start ``vandamme run DIR`` on 127.0.0.1 (on ``--port`` when given, else a free port),
   in its own session so the terminal's Ctrl-C goes to Claude Code and not to the gateway, its
   output in a log file, and wait for its ``/health`` (``--start-timeout``).
3. Run ``claude ARGS...`` with ``ANTHROPIC_BASE_URL`` pointed at the gateway, and
   ``ANTHROPIC_API_KEY`` set to a placeholder when neither it nor ``ANTHROPIC_AUTH_TOKEN`` is set
   (Claude Code will not start without a credential; a gateway holding the provider keys needs none
   from the client).
4. Pass Claude Code's exit code through (128+N when a signal N ended it), and stop the gateway it
   started (SIGTERM, then SIGKILL after ``--stop-timeout``) — also after Ctrl-C or a SIGTERM/SIGHUP
   to this process (forwarded to Claude Code first).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from .cli_env import default_spec_dir, environ_for
from .cli_health import fetch_health, spec_server_url, url_for
from .cli_output import Progress

PLACEHOLDER_KEY = "vandamme-wrap-placeholder"
EXIT_NOT_FOUND = 127


def _say(message: str) -> None:
    print(f"vandamme wrap: {message}", file=sys.stderr, flush=True)


def find_claude(explicit: str | None) -> str | None:
    """``--claude PATH``, else ``$CLAUDE_BIN``, else ``claude`` on PATH."""
    candidate = explicit or os.environ.get("CLAUDE_BIN") or "claude"
    if os.sep in candidate:
        return candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else None
    return shutil.which(candidate)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def gateway_environ(spec_dir: str, env_file: str | None) -> dict[str, str]:
    """The started gateway's environment: this one over the folder's .env, without an
    ``ANTHROPIC_BASE_URL`` aimed at this machine (the client's setting, which as the gateway's
    ``anthropic`` provider overlay would point the gateway at itself)."""
    env = environ_for(spec_dir, env_file)
    if env.get("ANTHROPIC_BASE_URL") and _loopback(env["ANTHROPIC_BASE_URL"]):
        env.pop("ANTHROPIC_BASE_URL")
    return env


class StartedGateway:
    """A `vandamme run` child process: started, waited for, stopped."""

    def __init__(self, spec_dir: str, port: int, env: dict[str, str], log_path: str | None):
        self.url = url_for("127.0.0.1", port)
        self.own_log = log_path is None
        if log_path is None:
            fd, log_path = tempfile.mkstemp(prefix="vandamme-wrap-", suffix=".log")
            os.close(fd)
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vandamme.engine.cli", "run", spec_dir, "--host", "127.0.0.1", "--port", str(port)],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)  # not in the terminal's process group: Ctrl-C is Claude Code's

    def wait_ready(self, timeout: float) -> str | None:
        """None once /health answers as Vandamme; else why not (exited, timed out)."""
        deadline = time.monotonic() + timeout
        with Progress(f"starting the gateway on {self.url}"):
            while time.monotonic() < deadline:
                code = self.proc.poll()
                if code is not None:
                    return f"`vandamme run` exited with code {code}"
                if fetch_health(self.url, timeout=1.0)["status"] is not None:
                    return None
                time.sleep(0.1)
        return f"no answer on {self.url}/health within {timeout:g} s"

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float) -> None:
        """SIGTERM (the gateway drains and exits), SIGKILL to its whole group after ``timeout``."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
                self.proc.wait(5)
        self._log.close()

    def discard_log(self) -> None:
        if self.own_log:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass


def claude_environ(base_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env["ANTHROPIC_BASE_URL"] = base_url
    if not env.get("ANTHROPIC_API_KEY") and not env.get("ANTHROPIC_AUTH_TOKEN"):
        env["ANTHROPIC_API_KEY"] = PLACEHOLDER_KEY
    return env


def run_child(argv: list[str], env: dict[str, str]) -> int:
    """Run ``argv`` in the foreground: Ctrl-C reaches it (same process group) and not us; a
    SIGTERM/SIGHUP sent to us is passed on to it. Its exit code, 128+N for signal N."""
    proc = subprocess.Popen(argv, env=env)
    def forward(signum, frame):
        if proc.poll() is None:
            proc.send_signal(signum)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, lambda s, f: None)}  # the child gets it too
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous[sig] = signal.signal(sig, forward)
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code


def wrap_claude(args) -> int:
    claude = find_claude(args.claude)
    if claude is None:
        _say(f"Claude Code not found ({args.claude or os.environ.get('CLAUDE_BIN') or 'claude on PATH'}): "
             "install it (npm install -g @anthropic-ai/claude-code), or name it with --claude PATH or CLAUDE_BIN")
        return EXIT_NOT_FOUND
    spec_dir = args.dir or default_spec_dir()
    try:
        env = gateway_environ(spec_dir, args.env_file)
    except FileNotFoundError as exc:
        _say(str(exc))
        return 1
    look = url_for("127.0.0.1", args.port) if args.port else spec_server_url(spec_dir, env)
    found = None if args.fresh else fetch_health(look, timeout=2.0)
    started: StartedGateway | None = None
    try:
        if found is not None and found["status"] is not None:
            base_url = look
            _say(f"using the gateway already running at {base_url} (version {found['version']}, "
                 f"{found['status']})")
        else:
            if not Path(spec_dir).is_dir():
                _say(f"no gateway answers at {look} and there is no spec folder {spec_dir} to start one "
                     "(--dir DIR, VDM_SPECS, or `vandamme config setup`)")
                return 1
            if args.port and found is not None and found["reachable"]:
                _say(f"port {args.port} answers, but not as a Vandamme gateway ({found['error']})")
                return 1
            port = args.port or free_port()
            started = StartedGateway(spec_dir, port, env, args.log)
            problem = started.wait_ready(args.start_timeout)
            if problem is not None:
                _say(f"the gateway did not start: {problem}; its log ({started.log_path}):")
                print(started.log_tail(), file=sys.stderr)
                started.stop(args.stop_timeout)
                started = None
                return 1
            base_url = started.url
            _say(f"started a gateway on {base_url} for {spec_dir} (log: {started.log_path})")
        return run_child([claude, *args.claude_args], claude_environ(base_url))
    except KeyboardInterrupt:  # Ctrl-C while the gateway was starting
        return 130
    finally:
        if started is not None:
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not orphan it
            try:
                with Progress("stopping the gateway"):
                    started.stop(args.stop_timeout)
            finally:
                signal.signal(signal.SIGINT, previous)
            code = started.proc.returncode
            if code not in (0, -signal.SIGTERM):
                _say(f"the gateway exited with code {code}; its log: {started.log_path}")
            else:
                started.discard_log()

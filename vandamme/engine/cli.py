"""`vandamme` command line: run, validate, config show, config setup, graph, explain, version,
health server, health upstream, models, wrap claude.

Exit codes: 0 success (spec valid), 1 spec invalid (or a check failed), 2 usage error.
"""
from __future__ import annotations

import argparse
import asyncio
import functools
import os
import sys

import orjson

from vandamme.sources import SpecError, SpecErrors

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def _load_and_compile(directory: str, tracer_provider=None):
    from .compiler import compile_gateway
    from .loader import load_spec

    loaded = load_spec(directory)
    return loaded, compile_gateway(loaded, tracer_provider=tracer_provider)


def _compiled(directory: str, fmt: str = "text"):
    """(loaded, gateway), or None after printing the spec's errors."""
    try:
        return _load_and_compile(directory)
    except SpecErrors as exc:
        _print_errors(exc.errors, fmt)
        return None


def _print_errors(errors: list[SpecError], fmt: str) -> None:
    if fmt == "json":
        sys.stdout.write(orjson.dumps({"valid": False, "errors": [e.as_dict() for e in errors]},
                                      option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        for e in errors:
            print(str(e), file=sys.stderr)
        print(f"{len(errors)} error{'s' if len(errors) != 1 else ''}", file=sys.stderr)


def cmd_validate(args) -> int:
    """Load, validate and compile; then check the spec's ``expect:`` entries (errors) and what it
    names that this environment cannot serve (warnings; errors too with --deny-warnings)."""
    from .expectations import check_expectations
    from .spec_warnings import inactive_provider_warnings

    compiled = _compiled(args.dir, args.format)
    if compiled is None:
        return EXIT_INVALID
    loaded, gw = compiled
    errors = check_expectations(loaded, gw)
    warnings = inactive_provider_warnings(loaded, gw)
    denied = bool(warnings) and args.deny_warnings
    ok = not errors and not denied
    active = sum(1 for p in gw.providers.values() if p.active)
    expectations = len(loaded.data.get("expect") or [])
    if args.format == "json":
        print(orjson.dumps({"valid": ok, "errors": [e.as_dict() for e in errors],
                            "warnings": [w.as_dict() for w in warnings], "files": list(loaded.files),
                            "providers": len(gw.providers), "active_providers": active,
                            "expectations": expectations}).decode())
        return EXIT_OK if ok else EXIT_INVALID
    for w in warnings:
        print(str(SpecError(f"warning: {w.message}", w.source, w.path)), file=sys.stderr)
    for e in errors:
        print(str(e), file=sys.stderr)
    counts = [f"{len(errors)} error{'s' if len(errors) != 1 else ''}"] if errors else []
    if warnings:
        counts.append(f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''}"
                      + (" (--deny-warnings)" if denied else ""))
    if not ok:
        print(", ".join(counts), file=sys.stderr)
        return EXIT_INVALID
    extra = f", {expectations} expectation{'s' if expectations != 1 else ''} met" if expectations else ""
    extra += f", {counts[0]}" if counts else ""
    print(f"{args.dir}: valid ({len(loaded.files)} files, {len(gw.providers)} providers, "
          f"{active} active{extra})")
    return EXIT_OK


def cmd_config_show(args) -> int:
    from .config_show import render_config

    compiled = _compiled(args.dir)
    if compiled is None:
        return EXIT_INVALID
    loaded, gw = compiled
    status = {name: ("active" if p.active else f"inactive: {p.inactive_reason}")
              for name, p in gw.providers.items()}
    sys.stdout.write(render_config(loaded, status))
    return EXIT_OK


def cmd_graph(args) -> int:
    from .graph import graph_dot, graph_json, graph_text

    compiled = _compiled(args.dir, args.format)
    if compiled is None:
        return EXIT_INVALID
    _, gw = compiled
    if args.format == "json":
        sys.stdout.write(orjson.dumps(graph_json(gw), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(graph_dot(gw) if args.format == "dot" else graph_text(gw))
    return EXIT_OK


def cmd_explain(args) -> int:
    from .explain import explain_json, render, resolver_for

    headers = {}
    for item in args.header or []:
        if "=" not in item:
            print(f"vandamme explain: --header takes K=V, got {item!r}", file=sys.stderr)
            return EXIT_USAGE
        k, v = item.split("=", 1)
        headers[k.strip().lower()] = v.strip()
    compiled = _compiled(args.dir)
    if compiled is None:
        return EXIT_INVALID
    _, gw = compiled
    inactive = sorted(n for n, p in gw.providers.items() if not p.active)
    # By default explain the spec as declared (every provider counted as configured), which is
    # what CI without secrets wants to check; --live asks the gateway's own resolve_target stage,
    # built with the keys of this environment.
    resolver = resolver_for(gw, live=args.live)
    out = explain_json(resolver, args.model, headers=headers, tokens=args.tokens,
                       pipelines=gw.pipelines(), pipeline_for=gw.pipeline_for)
    if args.format == "json":
        out["mode"] = "live" if args.live else "as-declared"
        out["inactive_providers"] = inactive
        print(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
        return EXIT_OK
    if args.live:
        sys.stdout.write("mode: live (providers without a key in this environment are skipped)\n")
    else:
        sys.stdout.write("mode: as declared (every provider counted as configured; --live uses this "
                         "environment's keys)\n")
    sys.stdout.write(render(out, tokens_given=args.tokens is not None))
    final = out["final"]["provider"]
    if not args.live and final in inactive:
        p = gw.providers[final]
        sys.stdout.write(f"note: provider '{final}' is inactive here ({p.inactive_reason})\n")
    return EXIT_OK


# ---------------------------------------------------------------- operator commands (vandamme/engine/cli_*.py)

def cmd_version(args) -> int:
    from .version import VERSION

    if args.json:
        import platform

        print(orjson.dumps({"name": "vandamme", "version": VERSION, "python": platform.python_version()}).decode())
    else:
        print(f"vandamme {VERSION}")
    return EXIT_OK


def _spec_dir(args) -> str:
    from .cli_env import default_spec_dir

    return args.dir or default_spec_dir()


def _compiled_with_env(args):
    """(spec folder, gateway) compiled with the environment over the folder's .env; None after
    printing why not (spec errors, a missing --env-file)."""
    from .cli_env import environ_for
    from .compiler import compile_gateway
    from .loader import load_spec

    directory = _spec_dir(args)
    try:
        environ = environ_for(directory, args.env_file)
        return directory, compile_gateway(load_spec(directory, environ))
    except FileNotFoundError as exc:
        print(f"vandamme {args.command}: {exc}", file=sys.stderr)
    except SpecErrors as exc:
        _print_errors(exc.errors, "text")
    return None


def cmd_health_server(args) -> int:
    from .cli_env import environ_for
    from .cli_health import health_server, normalise_url, spec_server_url

    if args.url:
        url = normalise_url(args.url)
    elif args.dir and not os.path.isdir(args.dir):
        print(f"vandamme health server: --dir {args.dir}: not a folder", file=sys.stderr)
        return EXIT_USAGE
    else:
        directory = _spec_dir(args)
        url = spec_server_url(directory, environ_for(directory)) if os.path.isdir(directory) else \
            spec_server_url(None)
    return health_server(url, args.timeout, args.json)


def cmd_health_upstream(args) -> int:
    from .cli_health import health_upstream

    compiled = _compiled_with_env(args)
    if compiled is None:
        return EXIT_INVALID
    return health_upstream(compiled[1], args.timeout, args.json)


def cmd_models(args) -> int:
    from .cli_models import models

    compiled = _compiled_with_env(args)
    if compiled is None:
        return EXIT_INVALID
    return models(compiled[1], args.provider, args.json)


def cmd_config_setup(args) -> int:
    from .cli_setup import setup

    return setup(args)


def cmd_wrap(args) -> int:
    from .cli_wrap import wrap_claude

    return wrap_claude(args)


def build_app_from_dir(directory: str, host: str | None = None, port: int | None = None, loaded=None):
    """App factory (also used by Sanic's worker processes when workers > 1: a forked worker holds
    its parent's app under the same name, which the new one replaces). ``loaded``: the folder
    already read (`vandamme run` reads it once in its main process)."""
    from sanic import Sanic

    Sanic._app_registry.pop("vandamme", None)
    from .compiler import compile_gateway, settings_from
    from .loader import load_spec
    from .logs import setup_logging
    from .server import create_app
    from .telemetry import tracer_provider_for

    if loaded is None:
        loaded = load_spec(directory)
    settings = settings_from(loaded.data)
    setup_logging(settings.log_level, fmt=settings.log_format)
    tracer_provider = tracer_provider_for(settings)
    gw = compile_gateway(loaded, tracer_provider=tracer_provider)

    def reloader():
        """SIGHUP: the folder loaded, validated and compiled again (server.* settings such as host,
        port and workers need a restart)."""
        return compile_gateway(load_spec(directory), tracer_provider=tracer_provider)

    app = create_app(gw, name="vandamme", reloader=reloader)
    if tracer_provider is not None:
        @app.after_server_stop
        async def _send_the_last_spans(app_):
            # what is recorded goes to the exporter process before this one ends: a worker of a
            # multi-worker server ends without running atexit handlers (multiprocessing's os._exit)
            await asyncio.to_thread(tracer_provider.shutdown)

    return app


def worker_app(directory: str, reserved, main_pid: int):
    """App factory of a multi-worker server: in a worker process (not the main one, which builds
    the app once too), first this worker's own listening socket on the reserved address."""
    if reserved is not None and os.getpid() != main_pid:
        from .listeners import listen_here

        listen_here(reserved)
    return build_app_from_dir(directory)


def raise_open_files_limit(want: int = 65536) -> None:
    """Each client connection and each upstream connection is a file descriptor; a gateway holding
    1,000 streams needs more than the usual soft limit of 1024. Raise the soft limit toward the
    hard one, as servers such as nginx do."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        if soft != resource.RLIM_INFINITY and soft < target:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ImportError, ValueError, OSError):
        pass


def _bind_problem(host: str, port: int) -> str | None:
    """Why the server could not listen on host:port (None when it can): bound and released here,
    with the options Sanic binds with, so that a port in use is one clear line and not a traceback
    after a "listening" line."""
    import errno
    import socket

    from sanic.server.socket import bind_socket

    try:
        bind_socket(host, port).close()
    except socket.gaierror as exc:
        return f"unknown host ({exc.strerror})"
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            return "address already in use"
        return (os.strerror(exc.errno) if exc.errno else str(exc)).lower()
    return None


def _cannot_listen(host: str, port: int, problem: str, json_logs: bool) -> int:
    from loguru import logger

    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    line = f"vandamme: cannot listen on {where}: {problem}"
    if json_logs:
        logger.error(line)  # stderr stays one JSON object per line
    else:
        print(line, file=sys.stderr)
    return 1


def cmd_run(args) -> int:
    import errno

    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from .compiler import settings_from
    from .loader import load_spec
    from .logs import setup_logging
    from . import listeners
    from .shutdown import MainProcessSignals
    from .metrics_env import prepare_workers
    from .watch import SpecWatcher, WorkerReloads, hold_sighup, reload_self, when_workers_serve

    raise_open_files_limit()
    hold_sighup()  # a SIGHUP while starting becomes a reload once serving, not the end of the process
    if args.log_format:  # through the environment, so that worker processes see it too
        os.environ["LOG_FORMAT"] = args.log_format
    # the folder as it is before it is read: a change made while starting is seen at the first poll
    watcher = SpecWatcher(args.dir, reload_self) if args.watch else None
    try:
        loaded = load_spec(args.dir)  # read once: the worker count, then the app below
        workers = args.workers or settings_from(loaded.data).workers
        # Several workers are forked from this process: the metrics' multiprocess folder must be
        # in the environment before prometheus_client is first imported (by the server module).
        prepare_workers(workers)
        from .server import health_problems

        app = build_app_from_dir(args.dir, loaded=loaded)
    except SpecErrors as exc:
        setup_logging("INFO")
        _print_errors(exc.errors, "text")
        return EXIT_INVALID
    s = app.ctx.gateway.settings
    host = args.host or s.host
    port = args.port or s.port
    from loguru import logger

    problem = _bind_problem(host, port)
    if problem:
        return _cannot_listen(host, port, problem, s.log_json)
    for p in app.ctx.gateway.providers.values():
        if p.active:
            logger.info("provider {} ({}) -> {} [{}]", p.name, p.format, p.base_url,
                        "passthrough key" if p.passthrough else f"{p.key_count} key(s)")
    for problem in health_problems(app.ctx.gateway):
        logger.warning("degraded: {} (/health reports \"degraded\")", problem)

    def serving(app_) -> None:
        """Once the socket is bound: the listening line, then the watcher (SIGHUP handled by now)."""
        logger.info("vandamme listening on http://{}:{} ({} worker{}{})", host, port, workers,
                    "s" if workers > 1 else "", f", watching {args.dir}" if watcher else "")
        if watcher is not None:
            watcher.start()

    try:
        if workers == 1:
            app.after_server_start(serving)
            app.run(host=host, port=port, single_process=True, access_log=False, motd=False)
            return EXIT_OK
        # The main process holds the port; each worker listens on a socket of its own
        # (SO_REUSEPORT, engine/listeners.py) so that connections are shared out evenly. The app
        # built above stays the main process's (Sanic's primary); each worker builds its own.
        reserved = listeners.reserve(host, port)
        loader = AppLoader(factory=functools.partial(worker_app, args.dir, reserved, os.getpid()))
        # Workers are forked, not spawned: they share this process's imported modules page for
        # page instead of importing everything again (docs/performance.md, "Workers"); each then
        # compiles the spec itself (its own pools, metrics files, span exporter, Redis link).
        # gc.freeze keeps the collector from touching — and so copying — the shared objects.
        Sanic.start_method = "fork"
        import gc

        gc.collect()
        gc.freeze()
        WorkerReloads(app).install()  # SIGHUP to this (main) process reloads every worker
        # SIGINT/SIGTERM handled off the main thread (Sanic's handler can hang it: shutdown.py)
        app.main_process_ready(lambda app_: MainProcessSignals(app_._manager).install())
        app.main_process_ready(lambda app_: when_workers_serve(app_, serving))
        where = {"sock": reserved} if reserved is not None else {"host": host, "port": port}
        app.prepare(**where, workers=workers, access_log=False, motd=False)
        Sanic.serve(primary=app, app_loader=loader)
    except OSError as exc:  # the port was taken between the check and Sanic's own bind
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        return _cannot_listen(host, port, "address already in use" if exc.errno == errno.EADDRINUSE
                              else os.strerror(exc.errno).lower(), s.log_json)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vandamme", description="LLM gateway for Anthropic-API clients, "
                                 "declared in YAML specs.")
    from .version import VERSION

    ap.add_argument("--version", action="version", version=f"vandamme {VERSION}",
                    help="print the version and exit")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a spec folder")
    run.add_argument("dir", nargs="?", help="spec folder (every *.yaml in it; default: $VDM_SPECS, ./specs/, the `config setup` folder, else the default specs shipped in the package)")
    run.add_argument("--host", help="interface to listen on (default: server.host / HOST, 127.0.0.1)")
    run.add_argument("--port", type=int, help="TCP port (default: server.port / PORT, 8082); a port in use is "
                     "one error line and exit 1")
    run.add_argument("--workers", type=int, help="worker processes (default: server.workers, 1); SIGHUP to "
                     "the main process reloads every worker")
    run.add_argument("--log-format", choices=["text", "json", "journal"],
                     help="text, json (one object per line) or journal (systemd's journal with the request "
                          "fields; the 'journal' extra) (default: logging.format / LOG_FORMAT, text)")
    run.add_argument("--watch", action="store_true",
                     help="reload when a spec file in DIR is added, removed or changed (polled every second)")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="load, validate and compile a spec folder; exit 1 when invalid")
    val.add_argument("dir", nargs="?", help="spec folder (every *.yaml in it; default: $VDM_SPECS, ./specs/, the `config setup` folder, else the default specs shipped in the package)")
    val.add_argument("--format", choices=["text", "json"], default="text",
                     help="text (file:line:col: path: message on stderr) or json on stdout (default text)")
    val.add_argument("--deny-warnings", action="store_true",
                     help="exit 1 when there are warnings (a route, alias or the default provider naming "
                          "a provider without a key here)")
    val.set_defaults(func=cmd_validate)

    cfg = sub.add_parser("config", help="inspect the effective configuration, or write one (setup)")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="effective spec with the source of every value; secrets masked")
    show.add_argument("dir", nargs="?", help="spec folder (every *.yaml in it; default: $VDM_SPECS, ./specs/, the `config setup` folder, else the default specs shipped in the package)")
    show.set_defaults(func=cmd_config_show)
    from .cli_setup import add_arguments as add_setup_arguments

    setup = cfg_sub.add_parser(
        "setup", help="write a spec folder and its .env (interactive, or scripted with flags)",
        description="Write DIR/vandamme.yaml and DIR/.env (the keys, mode 0600; the spec holds none), "
                    "validated before anything is written. Asks questions unless --provider or --yes is given.")
    add_setup_arguments(setup)
    setup.set_defaults(func=cmd_config_setup)

    gr = sub.add_parser("graph", help="print the compiled pipelines")
    gr.add_argument("dir", nargs="?", help="spec folder (every *.yaml in it; default: $VDM_SPECS, ./specs/, the `config setup` folder, else the default specs shipped in the package)")
    gr.add_argument("--format", choices=["text", "json", "dot"], default="text",
                    help="text, json, or dot (Graphviz) (default text)")
    gr.set_defaults(func=cmd_graph)

    ex = sub.add_parser("explain", help="show how a model name resolves, without sending anything")
    ex.add_argument("model", help="the model name a request would ask for")
    ex.add_argument("dir", nargs="?", help="spec folder (every *.yaml in it; default: $VDM_SPECS, ./specs/, the `config setup` folder, else the default specs shipped in the package)")
    ex.add_argument("--header", action="append", metavar="K=V", help="a request header (repeatable)")
    ex.add_argument("--tokens", type=int, help="assume this many input tokens")
    ex.add_argument("--format", choices=["text", "json"], default="text", help="text or json (default text)")
    ex.add_argument("--live", action="store_true",
                    help="resolve with the providers active in this environment (default: as declared)")
    ex.set_defaults(func=cmd_explain)
    _add_operator_commands(sub)
    return ap


def _add_operator_commands(sub) -> None:
    """version, health server|upstream, models, wrap claude (their code: vandamme/engine/cli_*.py)."""
    dir_help = ("spec folder (default: $VDM_SPECS, else ./specs/ when present, else the `config setup` "
                "folder ~/.config/vandamme)")
    env_help = "read provider keys from this file (default: DIR/.env when present; the environment wins)"
    json_help = "print JSON for scripts instead of a table"

    ver = sub.add_parser("version", help="print the version")
    ver.add_argument("--json", action="store_true", help='print {"name", "version", "python"} as JSON')
    ver.set_defaults(func=cmd_version)

    health = sub.add_parser("health", help="check a running gateway, or the upstream providers of a spec")
    health_sub = health.add_subparsers(dest="health_command", required=True)
    hs = health_sub.add_parser(
        "server", help="GET /health of a running gateway; exit 1 unless it answers status ok",
        description="Ask a running gateway's /health: status (ok or degraded, with the reasons), version, "
                    "generation. Exit 0 when it answers ok, 1 when unreachable, degraded or not a Vandamme.")
    hs.add_argument("url", nargs="?", help="gateway URL or host:port (default: server.host/port of the spec "
                                           "folder --dir, after PORT/HOST, else http://127.0.0.1:8082)")
    hs.add_argument("--dir", help="spec folder whose server.host/port give the default URL (default: "
                                  "$VDM_SPECS, else ./specs/ when present, else ~/.config/vandamme)")
    hs.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="seconds to wait for the answer (default 5)")
    hs.add_argument("--json", action="store_true", help=json_help)
    hs.set_defaults(func=cmd_health_server)
    hu = health_sub.add_parser(
        "upstream", help="check every active provider's reachability and key; exit 1 if any fails",
        description="Ask every active provider of a spec folder, concurrently, for its model list with the "
                    "key the gateway would use first: ok, unreachable, auth rejected (401/403) or error, "
                    "with the latency. A !PASSTHRU provider is checked for reachability only. Keys are "
                    "never printed.")
    hu.add_argument("dir", nargs="?", help=dir_help)
    hu.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS", help="seconds each provider gets (default 5)")
    hu.add_argument("--env-file", metavar="FILE", help=env_help)
    hu.add_argument("--json", action="store_true", help=json_help)
    hu.set_defaults(func=cmd_health_upstream)

    mo = sub.add_parser(
        "models", help="list the models of every active provider, or of one",
        description="The models /v1/models would list: each active provider's upstream list (its first key, "
                    "5 s), or the spec's models: list when the upstream cannot be asked. Ids are provider:model.")
    mo.add_argument("provider", nargs="?", help="only this provider (default: every active one)")
    mo.add_argument("--dir", help=dir_help)
    mo.add_argument("--env-file", metavar="FILE", help=env_help)
    mo.add_argument("--json", action="store_true", help=json_help)
    mo.set_defaults(func=cmd_models)

    wr = sub.add_parser(
        "wrap", help="run Claude Code through a gateway: vandamme wrap [OPTIONS] claude [ARGS...]",
        description="Use the Vandamme gateway running on the configured port, or start one (`vandamme run "
                    "DIR` on a free port), run `claude ARGS...` with ANTHROPIC_BASE_URL pointed at it "
                    "(ANTHROPIC_API_KEY set to a placeholder if unset), pass its exit code through and stop "
                    "the gateway it started. Options go before `claude`; everything after it is Claude "
                    "Code's. Also installed as `claude.vdm ARGS...`.")
    wr.add_argument("--dir", help=dir_help)
    wr.add_argument("--port", type=int, help="where to look for a running gateway and start one (default: look "
                                             "on the spec's server.port, start on a free port)")
    wr.add_argument("--claude", metavar="PATH", help="the Claude Code binary (default: $CLAUDE_BIN, else "
                                                     "claude on PATH)")
    wr.add_argument("--env-file", metavar="FILE", help="environment for a started gateway (default: DIR/.env "
                                                       "when present; the environment wins)")
    wr.add_argument("--fresh", action="store_true", help="always start a gateway, even if one answers")
    wr.add_argument("--start-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="seconds a started gateway has to answer /health (default 30)")
    wr.add_argument("--stop-timeout", type=float, default=15.0, metavar="SECONDS",
                    help="seconds a started gateway has to exit after SIGTERM before SIGKILL (default 15)")
    wr.add_argument("--log", metavar="FILE", help="write a started gateway's output here (default: a "
                                                  "temporary file, removed after a clean stop)")
    wr.add_argument("tool", choices=["claude"], help="the client to run (claude: Claude Code)")
    wr.add_argument("claude_args", nargs=argparse.REMAINDER, metavar="ARGS",
                    help="arguments passed to claude as they are")
    wr.set_defaults(func=cmd_wrap)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command in ("run", "validate", "config", "graph", "explain") and getattr(args, "dir", "") is None:
        from .cli_env import default_spec_dir

        args.dir = default_spec_dir()
    if args.command != "run":
        os.environ.setdefault("LOGURU_LEVEL", "WARNING")
    try:
        code = args.func(args)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        # The reader went away (`vandamme explain … | head`): not an error of ours. Point stdout at
        # /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def claude_vdm() -> None:
    """The `claude.vdm` console script: `vandamme wrap claude ARGS...` (every argument is Claude
    Code's; the spec folder comes from $VDM_SPECS, ./specs/ or ~/.config/vandamme)."""
    sys.exit(main(["wrap", "claude", *sys.argv[1:]]))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

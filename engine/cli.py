"""`vandamme` command line: run, validate, config show, graph, explain.

Exit codes: 0 success (spec valid), 1 spec invalid, 2 usage error.
"""
from __future__ import annotations

import argparse
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


def build_app_from_dir(directory: str, host: str | None = None, port: int | None = None):
    """App factory (also used by Sanic's worker processes when workers > 1)."""
    from .compiler import compile_gateway, settings_from
    from .loader import load_spec
    from .logs import setup_logging
    from .server import create_app
    from .telemetry import tracer_provider_for

    loaded = load_spec(directory)
    settings = settings_from(loaded.data)
    setup_logging(settings.log_level, settings.log_json)
    tracer_provider = tracer_provider_for(settings)
    gw = compile_gateway(loaded, tracer_provider=tracer_provider)

    def reloader():
        """SIGHUP: the folder loaded, validated and compiled again (server.* settings such as host,
        port and workers need a restart)."""
        return compile_gateway(load_spec(directory), tracer_provider=tracer_provider)

    return create_app(gw, name="vandamme", reloader=reloader)


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


def cmd_run(args) -> int:
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from .logs import setup_logging

    raise_open_files_limit()
    try:
        app = build_app_from_dir(args.dir)
    except SpecErrors as exc:
        setup_logging("INFO")
        _print_errors(exc.errors, "text")
        return EXIT_INVALID
    s = app.ctx.gateway.settings
    host = args.host or s.host
    port = args.port or s.port
    workers = args.workers or s.workers
    from loguru import logger

    for p in app.ctx.gateway.providers.values():
        if p.active:
            logger.info("provider {} ({}) -> {} [{}]", p.name, p.format, p.base_url,
                        "passthrough key" if p.passthrough else f"{p.key_count} key(s)")
    logger.info("vandamme listening on http://{}:{} ({} worker{})", host, port, workers, "s" if workers > 1 else "")
    if workers == 1:
        app.run(host=host, port=port, single_process=True, access_log=False, motd=False)
        return EXIT_OK
    Sanic._app_registry.pop(app.name, None)
    loader = AppLoader(factory=functools.partial(build_app_from_dir, args.dir))
    app = loader.load()
    app.prepare(host=host, port=port, workers=workers, access_log=False, motd=False)
    Sanic.serve(primary=app, app_loader=loader)
    return EXIT_OK


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="vandamme", description="LLM gateway for Anthropic-API clients, "
                                 "declared in YAML specs.")
    sub = ap.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="serve a spec folder")
    run.add_argument("dir", help="spec folder (every *.yaml in it)")
    run.add_argument("--host")
    run.add_argument("--port", type=int)
    run.add_argument("--workers", type=int, help="worker processes (default: server.workers, 1)")
    run.set_defaults(func=cmd_run)

    val = sub.add_parser("validate", help="load, validate and compile a spec folder; exit 1 when invalid")
    val.add_argument("dir")
    val.add_argument("--format", choices=["text", "json"], default="text")
    val.add_argument("--deny-warnings", action="store_true",
                     help="exit 1 when there are warnings (a route, alias or the default provider naming "
                          "a provider without a key here)")
    val.set_defaults(func=cmd_validate)

    cfg = sub.add_parser("config", help="inspect the effective configuration")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True)
    show = cfg_sub.add_parser("show", help="effective spec with the source of every value; secrets masked")
    show.add_argument("dir")
    show.set_defaults(func=cmd_config_show)

    gr = sub.add_parser("graph", help="print the compiled pipelines")
    gr.add_argument("dir")
    gr.add_argument("--format", choices=["text", "json", "dot"], default="text")
    gr.set_defaults(func=cmd_graph)

    ex = sub.add_parser("explain", help="show how a model name resolves, without sending anything")
    ex.add_argument("model")
    ex.add_argument("dir", nargs="?", default="specs/")
    ex.add_argument("--header", action="append", metavar="K=V", help="a request header (repeatable)")
    ex.add_argument("--tokens", type=int, help="assume this many input tokens")
    ex.add_argument("--format", choices=["text", "json"], default="text")
    ex.add_argument("--live", action="store_true",
                    help="resolve with the providers active in this environment (default: as declared)")
    ex.set_defaults(func=cmd_explain)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

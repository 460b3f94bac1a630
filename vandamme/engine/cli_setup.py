"""`vandamme config setup`: write a spec folder (``vandamme.yaml``) and its ``.env``.

Interactive by default (questions on stderr, answers on stdin; an API key is read with getpass on
a terminal, never echoed), or scripted with flags (``--provider NAME [--base-url URL]
[--api-key-env VAR] ...``, ``--default``, ``--alias``), which never prompt.

The spec never holds a key: each provider's key goes to ``.env`` as ``<PROVIDER>_API_KEY`` (the
environment overlay the loader applies), the file created with mode 0600; ``!PASSTHRU`` (each
client's own key) is not a secret and goes into the spec. The result is validated — loaded,
checked against the schema and compiled, exactly as ``vandamme validate`` does — before anything is
written, so setup never leaves an invalid folder behind.
"""
from __future__ import annotations

import argparse
import datetime
import io
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cli_env import ENV_FILE, config_dir, read_env_file, write_env_file

SPEC_FILE = "vandamme.yaml"
PASSTHRU = "!PASSTHRU"
TIERS = ("haiku", "sonnet", "opus")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

# The presets of specs/10-providers.yaml and 20-aliases.yaml (an installed package has no specs/).
PRESETS: dict[str, dict[str, Any]] = {
    "openai": {"label": "OpenAI", "format": "openai", "base_url": "https://api.openai.com/v1",
               "aliases": {"haiku": "gpt-4o-mini", "sonnet": "gpt-4o", "opus": "gpt-4o"}},
    "anthropic": {"label": "Anthropic (passthrough, no conversion)", "format": "anthropic",
                  "base_url": "https://api.anthropic.com",
                  "aliases": {"haiku": "claude-3-5-haiku-latest", "sonnet": "claude-sonnet-4-5",
                              "opus": "claude-opus-4-1"}},
    "azure": {"label": "Azure OpenAI (base URL https://RESOURCE.openai.azure.com)", "format": "openai",
              "base_url": None, "api_style": "azure", "api_version": "2024-10-21", "auth": "api-key",
              "aliases": {"haiku": "gpt-4o-mini", "sonnet": "gpt-4o", "opus": "gpt-4o"}},
    "gemini": {"label": "Google Gemini (OpenAI-compatible endpoint)", "format": "openai",
               "base_url": "https://generativelanguage.googleapis.com/v1beta/openai",
               "middleware": ["gemini_thought_signatures"],
               "aliases": {"haiku": "gemini-2.5-flash", "sonnet": "gemini-2.5-pro", "opus": "gemini-2.5-pro"}},
    "groq": {"label": "Groq", "format": "openai", "base_url": "https://api.groq.com/openai/v1",
             "aliases": {"haiku": "llama-3.1-8b-instant", "sonnet": "llama-3.3-70b-versatile",
                         "opus": "llama-3.3-70b-versatile"}},
    "poe": {"label": "Poe", "format": "openai", "base_url": "https://api.poe.com/v1",
            "aliases": {"haiku": "Claude-Haiku-3.5", "sonnet": "Claude-Sonnet-4.5", "opus": "Claude-Opus-4.1"}},
    "openrouter": {"label": "OpenRouter", "format": "openai", "base_url": "https://openrouter.ai/api/v1",
                   "aliases": {"haiku": "anthropic/claude-3.5-haiku", "sonnet": "anthropic/claude-sonnet-4.5",
                               "opus": "anthropic/claude-opus-4.1"}},
    "deepseek": {"label": "DeepSeek", "format": "openai", "base_url": "https://api.deepseek.com/v1",
                 "aliases": {"haiku": "deepseek-chat", "sonnet": "deepseek-chat", "opus": "deepseek-reasoner"}},
    "local": {"label": "local OpenAI-compatible server (Ollama, vLLM, LM Studio...), no key needed",
              "format": "openai", "base_url": "http://127.0.0.1:11434/v1", "requires_key": False, "aliases": {}},
}
CUSTOM = "custom"


class SetupError(Exception):
    """A wrong flag or answer: one line for the user, exit 1 (2 for flag misuse)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


@dataclass
class ProviderChoice:
    name: str
    format: str | None = None
    base_url: str | None = None
    api_version: str | None = None
    key: str | None = None          # the key ring text for .env (never written to the spec)
    key_env: str | None = None      # --api-key-env: where the key was read from
    passthrough: bool = False
    no_key: bool = False

    @property
    def preset(self) -> dict[str, Any]:
        return PRESETS.get(self.name, {})

    @property
    def env_var(self) -> str:
        return f"{self.name.upper()}_API_KEY"


@dataclass
class Plan:
    out: Path
    providers: list[ProviderChoice] = field(default_factory=list)
    default: str | None = None
    tiers: dict[str, str] = field(default_factory=dict)      # the default provider's haiku/sonnet/opus
    aliases: dict[str, str] = field(default_factory=dict)    # global aliases
    host: str = "127.0.0.1"
    port: int = 8082


# ---------------------------------------------------------------------------- flags

class _ProviderAction(argparse.Action):
    """``--provider NAME`` starts a provider; the per-provider flags after it apply to it."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = list(getattr(namespace, "setup_providers", None) or [])
        items.append(ProviderChoice(name=values))
        namespace.setup_providers = items


class _ForLastProvider(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, "setup_providers", None) or []
        if not items:
            parser.error(f"{option_string} applies to a provider: give --provider NAME before it")
        setattr(items[-1], self.dest, True if self.nargs == 0 else values)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", metavar="DIR",
                   help=f"folder to write {SPEC_FILE} and {ENV_FILE} into (default: {config_dir()}, i.e. "
                        "$XDG_CONFIG_HOME/vandamme)")
    p.add_argument("--provider", action=_ProviderAction, metavar="NAME", dest="setup_providers",
                   help="add a provider (repeatable): a preset (" + ", ".join(PRESETS) + ") or a new name for a "
                        "custom one (then --base-url is required). The flags below apply to the last --provider. "
                        "Any --provider makes setup non-interactive")
    p.add_argument("--base-url", action=_ForLastProvider, dest="base_url", metavar="URL",
                   help="base URL of the last --provider (default: the preset's; OpenAI format up to and "
                        "including /v1, Anthropic format without /v1)")
    p.add_argument("--format", action=_ForLastProvider, dest="format", choices=["openai", "anthropic"],
                   help="wire format of the last --provider (custom providers; default openai)")
    p.add_argument("--api-version", action=_ForLastProvider, dest="api_version", metavar="VERSION",
                   help="Azure api-version of the last --provider (default 2024-10-21)")
    p.add_argument("--api-key-env", action=_ForLastProvider, dest="key_env", metavar="VAR",
                   help="read the last --provider's key (or space-separated keys) from environment variable VAR "
                        "now and write it to .env as <PROVIDER>_API_KEY (keys never go on the command line)")
    p.add_argument("--passthrough", action=_ForLastProvider, dest="passthrough", nargs=0,
                   help="the last --provider uses each client's own key (!PASSTHRU) instead of one in .env")
    p.add_argument("--no-key", action=_ForLastProvider, dest="no_key", nargs=0,
                   help="the last --provider needs no key (requires_key: false; a local server)")
    p.add_argument("--default", metavar="NAME",
                   help="default provider: where Claude Code's haiku/sonnet/opus names and bare model names go "
                        "(default: the first --provider)")
    p.add_argument("--alias", action="append", metavar="NAME=TARGET", default=[],
                   help="a global alias, e.g. fast=groq:llama-3.1-8b-instant (repeatable); an alias named "
                        "haiku, sonnet or opus replaces the default provider's preset one")
    p.add_argument("--host", help="server.host to write (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="server.port to write (default 8082)")
    p.add_argument("--yes", "-y", "--non-interactive", dest="yes", action="store_true",
                   help="never prompt: use the flags and the presets' defaults (implied by --provider)")
    p.add_argument("--force", action="store_true",
                   help=f"replace an existing {SPEC_FILE} in the folder (an existing {ENV_FILE} is always "
                        "updated in place: other variables in it are kept)")
    p.add_argument("--json", action="store_true", help="print what was written as JSON (never a key)")


def plan_from_flags(args, environ=None) -> Plan:
    environ = os.environ if environ is None else environ
    plan = Plan(out=Path(args.out) if args.out else config_dir())
    choices = list(getattr(args, "setup_providers", None) or [])
    if not choices:
        raise SetupError("give at least one --provider NAME (or run without --yes to be asked)", 2)
    for c in choices:
        _check_name(c.name)
        if c.key_env:
            value = environ.get(c.key_env, "").strip()
            if not value:
                raise SetupError(f"--api-key-env {c.key_env}: that variable is not set (or empty)")
            if value == PASSTHRU:
                c.passthrough = True
            else:
                c.key = value
        _complete(c)
    plan.providers = choices
    _names_unique(choices)
    plan.default = args.default or choices[0].name
    if plan.default not in [c.name for c in choices]:
        raise SetupError(f"--default {plan.default}: not one of the providers given "
                         f"({', '.join(c.name for c in choices)})")
    plan.tiers = dict(_default_of(plan).preset.get("aliases") or {})
    for item in args.alias:
        name, target = _parse_alias(item)
        plan.aliases[name] = target
        plan.tiers.pop(name, None)
    if args.host:
        plan.host = args.host
    if args.port:
        plan.port = args.port
    return plan


def _check_name(name: str) -> None:
    if name == CUSTOM:
        raise SetupError("a custom provider needs its own name: --provider myname --base-url URL", 2)
    if not _NAME.match(name):
        raise SetupError(f"provider name {name!r}: lower-case letters, digits and _, starting with a letter", 2)


def _names_unique(choices) -> None:
    seen = set()
    for c in choices:
        if c.name in seen:
            raise SetupError(f"provider '{c.name}' given twice", 2)
        seen.add(c.name)


def _complete(c: ProviderChoice) -> None:
    """Fill a choice from its preset; a custom provider or Azure needs a base URL."""
    preset = c.preset
    c.format = c.format or preset.get("format") or "openai"
    c.base_url = c.base_url or preset.get("base_url")
    if not c.base_url:
        what = "Azure (https://RESOURCE.openai.azure.com)" if c.name == "azure" else f"custom provider '{c.name}'"
        raise SetupError(f"{what} needs --base-url URL")
    if preset.get("api_style") == "azure":
        c.api_version = c.api_version or preset.get("api_version")


def _parse_alias(item: str) -> tuple[str, str]:
    name, eq, target = item.partition("=")
    name, target = name.strip(), target.strip()
    if not eq or not name or not target:
        raise SetupError(f"an alias is NAME=TARGET (e.g. fast=groq:llama-3.1-8b-instant), got {item!r}", 2)
    return name, target


def _default_of(plan: Plan) -> ProviderChoice:
    return next(c for c in plan.providers if c.name == plan.default)


# ---------------------------------------------------------------------------- questions

class Asker:
    """Questions on stderr, answers from stdin (a terminal or a pipe). End of input aborts."""

    def __init__(self, stdin=None, stderr=None):
        self.stdin = stdin or sys.stdin
        self.stderr = stderr or sys.stderr
        self.tty = bool(getattr(self.stdin, "isatty", lambda: False)())

    def say(self, text: str = "") -> None:
        self.stderr.write(text + "\n")
        self.stderr.flush()

    def ask(self, question: str, default: str | None = None) -> str:
        shown = f"{question} [{default}]: " if default not in (None, "") else f"{question}: "
        self.stderr.write(shown)
        self.stderr.flush()
        line = self.stdin.readline()
        if not line:
            self.say()
            raise SetupError("setup cancelled: input ended before every question was answered")
        answer = line.strip()
        if not self.tty:
            self.say(answer)  # a piped answer, echoed so that the transcript reads as a dialogue
        return answer if answer else (default or "")

    def secret(self, question: str) -> str:
        """A key: getpass on a terminal (not echoed); a plain line from a pipe."""
        if self.tty:
            import getpass

            try:
                return getpass.getpass(question + ": ", stream=self.stderr).strip()
            except EOFError:
                raise SetupError("setup cancelled: input ended") from None
        self.stderr.write(question + ": ")
        self.stderr.flush()
        line = self.stdin.readline()
        if not line:
            self.say()
            raise SetupError("setup cancelled: input ended before every question was answered")
        self.say()
        return line.strip()

    def yes(self, question: str, default: bool = False) -> bool:
        answer = self.ask(question + (" [Y/n]" if default else " [y/N]"), "").lower()
        return default if not answer else answer in ("y", "yes")


def _menu() -> list[str]:
    return [*PRESETS, CUSTOM]


def plan_interactive(args, asker: Asker, environ=None) -> Plan:
    environ = os.environ if environ is None else environ
    asker.say("Vandamme setup: writes a spec folder (vandamme.yaml) and an .env with the keys (mode 0600).")
    out = Path(asker.ask("Spec folder", args.out or str(config_dir()))).expanduser()
    plan = Plan(out=out)
    asker.say("Providers:")
    menu = _menu()
    for i, name in enumerate(menu, 1):
        label = PRESETS[name]["label"] if name in PRESETS else "any other OpenAI- or Anthropic-compatible API"
        asker.say(f"  {i:2}. {name:<11} {label}")
    while True:
        picked = _pick(asker.ask("Which (numbers or names, comma-separated)", "1"), menu)
        if picked:
            break
        asker.say("  choose at least one, by number or name")
    for name in picked:
        plan.providers.append(_ask_provider(name, asker, environ, taken=[c.name for c in plan.providers]))
    names = [c.name for c in plan.providers]
    while True:
        plan.default = asker.ask("Default provider (Claude Code's haiku/sonnet/opus and bare model names go here)",
                                 names[0])
        if plan.default in names:
            break
        asker.say(f"  one of: {', '.join(names)}")
    preset_tiers = _default_of(plan).preset.get("aliases") or {}
    asker.say(f"Models for Claude Code's tiers on {plan.default} (Enter keeps the default, - for none):")
    for tier in TIERS:
        model = asker.ask(f"  {tier}", preset_tiers.get(tier))
        if model and model != "-":
            plan.tiers[tier] = model
    asker.say("More aliases, NAME=provider:model (an empty line ends):")
    while True:
        item = asker.ask("  alias")
        if not item:
            break
        try:
            name, target = _parse_alias(item)
        except SetupError as exc:
            asker.say(f"  {exc}")
            continue
        plan.aliases[name] = target
        plan.tiers.pop(name, None)
    while True:
        port = asker.ask("Port the gateway listens on", str(args.port or 8082))
        if port.isdigit() and 1 <= int(port) <= 65535:
            plan.port = int(port)
            break
        asker.say("  a number from 1 to 65535")
    plan.host = args.host or plan.host
    return plan


def _pick(answer: str, menu: list[str]) -> list[str]:
    out = []
    for item in re.split(r"[,\s]+", answer.strip()):
        if not item:
            continue
        if item.isdigit() and 1 <= int(item) <= len(menu):
            item = menu[int(item) - 1]
        if item not in menu:
            return []
        out.append(item)
    return out


def _ask_provider(name: str, asker: Asker, environ, taken: list[str]) -> ProviderChoice:
    asker.say(f"-- {name}")
    if name == CUSTOM:
        while True:
            name = asker.ask("  Name (lower-case letters, digits, _)")
            if _NAME.match(name) and name not in taken and name not in (CUSTOM,):
                break
            asker.say("  a new name: lower-case letters, digits and _, starting with a letter")
        fmt = ""
        while fmt not in ("openai", "anthropic"):
            fmt = asker.ask("  Format (openai = converted, anthropic = passthrough)", "openai")
        c = ProviderChoice(name=name, format=fmt)
    else:
        c = ProviderChoice(name=name)
    preset = c.preset
    while True:
        url = asker.ask("  Base URL", preset.get("base_url"))
        if re.match(r"^https?://[^/\s]+", url):
            c.base_url = url
            break
        asker.say("  an http(s):// URL")
    if preset.get("api_style") == "azure":
        c.api_version = asker.ask("  api-version", preset.get("api_version"))
    in_env = bool(environ.get(c.env_var))
    if preset.get("requires_key") is False:
        hint = "Enter for none"
    elif in_env:
        hint = f"Enter: take it from ${c.env_var}"
    else:
        hint = f"Enter: none now, set {c.env_var} later"
    key = asker.secret(f"  API key (hidden; {hint}; {PASSTHRU} = each client's own key)")
    if key == PASSTHRU:
        c.passthrough = True
    elif key:
        c.key = key
    elif in_env and preset.get("requires_key") is not False:
        c.key, c.key_env = environ[c.env_var].strip(), c.env_var
    _complete(c)
    return c


# ---------------------------------------------------------------------------- writing

def render_spec(plan: Plan) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    doc = CommentedMap()
    doc["version"] = 1
    doc["server"] = CommentedMap(host=plan.host, port=plan.port)
    doc["default_provider"] = plan.default
    providers = CommentedMap()
    for c in plan.providers:
        p = CommentedMap()
        preset = c.preset
        p["format"] = c.format
        p["base_url"] = c.base_url
        if preset.get("api_style"):
            p["api_style"] = preset["api_style"]
            p["api_version"] = c.api_version
        if preset.get("auth"):
            p["auth"] = preset["auth"]
        if c.passthrough:
            p["api_keys"] = CommentedSeq([PASSTHRU])
            p.yaml_add_eol_comment("# each client's own key (x-api-key / Authorization)", "api_keys")
        elif c.no_key or preset.get("requires_key") is False:
            p["requires_key"] = False
        if c.key:
            p.yaml_add_eol_comment(f"# key: {c.env_var} (in {ENV_FILE})", "base_url")
        elif c.no_key or preset.get("requires_key") is False:
            p.yaml_add_eol_comment(f"# no key needed ({c.env_var} if it wants one)", "base_url")
        elif not c.passthrough:
            p.yaml_add_eol_comment(f"# key: {c.env_var} (not set yet: add it to {ENV_FILE})", "base_url")
        if preset.get("middleware"):
            p["middleware"] = CommentedSeq(preset["middleware"])
        if c.name == plan.default and plan.tiers:
            p["aliases"] = CommentedMap(plan.tiers)
        providers[c.name] = p
    doc["providers"] = providers
    if plan.aliases:
        doc["aliases"] = CommentedMap(plan.aliases)
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    buf = io.StringIO()
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    buf.write(f"# Written by `vandamme config setup` ({stamp}). No keys here: each provider's key is\n"
              f"# read from <PROVIDER>_API_KEY, kept in {ENV_FILE} beside this file (mode 0600).\n"
              f"# Check: vandamme validate DIR    Serve: vandamme run DIR (with {ENV_FILE} exported)\n")
    yaml.dump(doc, buf)
    return buf.getvalue()


def env_values(plan: Plan) -> dict[str, str]:
    return {c.env_var: c.key for c in plan.providers if c.key and not c.passthrough}


def check(spec_text: str):
    """Load, validate and compile the spec as `vandamme validate` would (keys not needed):
    (loaded, gateway), or raises SpecErrors."""
    from .compiler import compile_gateway
    from .loader import load_spec

    with tempfile.TemporaryDirectory(prefix="vandamme-setup-") as tmp:
        Path(tmp, SPEC_FILE).write_text(spec_text, encoding="utf-8")
        loaded = load_spec(tmp, {})
        return loaded, compile_gateway(loaded)


def write(plan: Plan, spec_text: str, force: bool, asker: Asker | None) -> tuple[Path, Path]:
    out = plan.out
    if out.exists() and not out.is_dir():
        raise SetupError(f"{out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    spec_path, env_path = out / SPEC_FILE, out / ENV_FILE
    if spec_path.exists() and not force:
        if asker is None or not asker.yes(f"{spec_path} exists: replace it?"):
            raise SetupError(f"{spec_path} exists: pass --force to replace it")
    values = env_values(plan)
    if values or env_path.exists():
        merged = {**read_env_file(env_path), **values}
        write_env_file(env_path, merged, comments=[
            "Provider keys for the specs in this folder (written by `vandamme config setup`).",
            f"Load before `vandamme run`: set -a; . {env_path}; set +a",
            "(`vandamme health upstream`, `models` and `wrap` read this file themselves.)"])
    tmp = spec_path.with_name(f".{SPEC_FILE}.tmp")
    tmp.write_text(spec_text, encoding="utf-8")
    os.replace(tmp, spec_path)
    return spec_path, env_path


def others_in(out: Path) -> list[str]:
    if not out.is_dir():
        return []
    return sorted(p.name for p in out.iterdir()
                  if p.suffix in (".yaml", ".yml") and p.name != SPEC_FILE and p.is_file())


def setup(args) -> int:
    from vandamme.sources import SpecErrors, format_path

    from .cli_output import emit_json

    interactive = not (args.yes or getattr(args, "setup_providers", None))
    asker = Asker() if interactive else None
    try:
        plan = plan_interactive(args, asker) if interactive else plan_from_flags(args)
        spec_text = render_spec(plan)
        try:
            check(spec_text)
        except SpecErrors as exc:  # e.g. an alias naming a provider not set up, a bad base URL
            for e in exc.errors:
                where = f"{format_path(e.path)}: " if e.path else ""
                print(f"vandamme config setup: {where}{e.message}", file=sys.stderr)
            print("vandamme config setup: nothing written", file=sys.stderr)
            return 1
        spec_path, env_path = write(plan, spec_text, args.force, asker)
    except SetupError as exc:
        print(f"vandamme config setup: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:
        print("\nvandamme config setup: cancelled, nothing written", file=sys.stderr)
        return 130
    others = others_in(plan.out)
    keyed = [c.name for c in plan.providers if c.key]
    summary = {
        "spec": str(spec_path), "env": str(env_path) if env_path.exists() else None,
        "env_vars": sorted(env_values(plan)), "default_provider": plan.default,
        "providers": [{"name": c.name, "format": c.format, "base_url": c.base_url,
                       "key": ("passthrough" if c.passthrough else c.env_var if c.key else
                               "none needed" if (c.no_key or c.preset.get("requires_key") is False) else
                               f"not set: {c.env_var}")} for c in plan.providers],
        "aliases": {**{t: f"{plan.default}:{m}" for t, m in plan.tiers.items()}, **plan.aliases},
        "other_spec_files": others, "valid": True,
    }
    if args.json:
        emit_json(summary)
        return 0
    print(f"wrote {spec_path}" + (f" and {env_path} (mode 0600; {', '.join(summary['env_vars'])})"
                                  if summary["env_vars"] else ""))
    print(f"valid: {len(plan.providers)} provider{'s' if len(plan.providers) != 1 else ''}, "
          f"default {plan.default}" + (f", keys for {', '.join(keyed)}" if keyed else ""))
    for p in summary["providers"]:
        if p["key"].startswith("not set"):
            print(f"note: {p['name']} has no key yet: add {p['key'][9:]}=... to {out_env(plan)}")
    if others:
        print(f"note: {plan.out} also holds {', '.join(others)}: they are merged with {SPEC_FILE} (sorted by name)")
    d = str(plan.out)
    print(f"next: vandamme health upstream {d}   |   vandamme wrap --dir {d} claude   |   "
          f"set -a; . {d}/{ENV_FILE}; set +a; vandamme run {d}")
    return 0


def out_env(plan: Plan) -> str:
    return str(plan.out / ENV_FILE)

"""docs/migrating.md (coming from vandamme-proxy) stays true where it can be checked:

* every environment variable the doc's tables name on Vandamme's side is read by Vandamme: set on
  its own over the default specs, the overlays (vandamme/engine/overlays.py) record it as a value's source,
  or else vandamme/engine/ or vandamme/transforms/ read it by name;
* every spec key the tables name exists in schemas/vandamme.schema.json;
* every `vandamme ...` command the doc names parses with ``vandamme.engine.cli.parser()``, and the
  `claude.vdm` console script it names is declared in pyproject.toml;
* every endpoint the doc names on Vandamme's side is a route of the app;
* the worked example (its YAML files over a copy of the default specs, with its vandamme.env as
  the environment) loads, validates and compiles, its `expect:` entries are met, every provider it
  gives a key is active, and the one warning the doc announces is the only one;
* every other YAML block validates merged over the default specs; the TOML example is valid TOML and
  every variable of the vandamme-proxy .env example has a row in the variables table.
"""
from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import shutil
import textwrap
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "migrating.md").read_text()
SPECS = ROOT / "specs"
EXAMPLE_DIR = "/etc/vandamme/specs/"
EXAMPLE_ENV = "/etc/vandamme/vandamme.env"
PLACEHOLDERS = {"DIR": "specs/", "MODEL": "haiku", "PROVIDER": "openai", "URL": "http://127.0.0.1:8082",
                "N": "2"}


# ---------------------------------------------------------------- reading the doc

def section(title: str) -> str:
    """The text of the `## title` section (up to the next `## `)."""
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", DOC, re.S | re.M)
    assert m, f"docs/migrating.md has no '## {title}' section"
    return m.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The body rows of the first Markdown table in ``text``, as lists of cells."""
    rows = []
    for line in text.splitlines():
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if set("".join(cells)) <= set("-: |"):
            continue  # the separator line
        rows.append(cells)
    return rows[1:]  # without the header


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def fenced(lang: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(rf"^```{lang}\n(.*?)^```", DOC, re.S | re.M)]


ENV_VAR = re.compile(r"^[A-Z<][A-Z0-9_<>]*$")
SPEC_KEY = re.compile(r"^[a-z_]+(\.[a-z_<>]+)*$")
TABLES = ("Environment variables", "`vdm` commands", "HTTP endpoints", "TOML settings (`vandamme-config.toml`)")


def vandamme_column(title: str) -> list[str]:
    """Every code span of the Vandamme column of a section's table."""
    rows = table_rows(section(title))
    assert rows, title
    return [span for row in rows for span in code_spans(row[1])]


def env_vars_supported() -> list[str]:
    out = []
    for span in vandamme_column("Environment variables"):
        name = span.split("=", 1)[0]
        if ENV_VAR.match(name) and re.search(r"[A-Z]", name.replace("<P>", "").replace("<NAME>", "")):
            out.append(name)
    return sorted(set(out))


# ---------------------------------------------------------------- the tables

@pytest.mark.parametrize("title", TABLES)
def test_tables_have_three_columns(title):
    rows = table_rows(section(title))
    assert len(rows) >= 10, (title, len(rows))
    bad = [r for r in rows if len(r) != 3]
    assert not bad, f"{title}: rows without exactly 3 cells (a '|' inside a cell?): {bad}"


def _instantiate(var: str) -> str:
    return var.replace("<P>", "OPENAI").replace("<NAME>", "FAST")


def _read_by_overlays(var: str) -> bool:
    """Set ``var`` alone over the default specs: do the overlays record it as a source (or as the
    source of a coercion error)?"""
    from vandamme.engine.loader import load_files
    from vandamme.engine.overlays import apply_env

    for value in ("1", "0", "http://127.0.0.1:9"):
        data, sources, _ = load_files(SPECS)
        errors = apply_env(data, sources, {var: value})
        if any(s.env == var for s in sources.values()) or any(e.source.env == var for e in errors):
            return True
    return False


def _read_by_name(var: str) -> bool:
    for folder in ("engine", "transforms"):
        for path in (ROOT / folder).rglob("*.py"):
            if var in path.read_text():
                return True
    return False


def test_every_vandamme_env_var_named_is_read():
    names = env_vars_supported()
    assert len(names) >= 15, names  # the table maps most of vandamme-proxy's variables
    assert {"<P>_API_KEY", "<P>_BASE_URL", "VDM_API_KEYS", "REQUEST_TIMEOUT"} <= set(names), names
    unread = [n for n in names if not (_read_by_overlays(_instantiate(n)) or _read_by_name(n))]
    assert not unread, f"docs/migrating.md names variables Vandamme does not read: {unread}"


def _schema_node(path: str):
    schema = json.loads((ROOT / "schemas" / "vandamme.schema.json").read_text())
    defs = schema.get("$defs", {})
    node = schema
    for part in path.split("."):
        if "$ref" in node:
            node = defs[node["$ref"].rsplit("/", 1)[-1]]
        if part == "<p>":
            node = node.get("additionalProperties")
        else:
            node = (node.get("properties") or {}).get(part)
        if not isinstance(node, dict):
            return None
    return node


def test_every_spec_key_named_exists_in_the_schema():
    keys = sorted({s for title in ("Environment variables", "TOML settings (`vandamme-config.toml`)")
                   for s in vandamme_column(title) if SPEC_KEY.match(s) and not ENV_VAR.match(s)})
    assert {"server.request_timeout", "providers.<p>.aliases", "default_provider"} <= set(keys), keys
    missing = [k for k in keys if _schema_node(k) is None]
    assert not missing, f"spec keys named in docs/migrating.md but not in the schema: {missing}"


def _commands() -> list[str]:
    found = [s for s in re.findall(r"`([^`]+)`", DOC) if s.startswith("vandamme ")]
    for block in fenced("sh"):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("vandamme "):
                found.append(line)
    return sorted(set(found))


def _argv(command: str) -> list[str]:
    text = re.sub(r"\s*\[[^\]]*\]", "", command)  # optional parts left out
    return [PLACEHOLDERS.get(word, word) for word in shlex.split(text)[1:]]


def test_every_vandamme_command_named_parses():
    """Every `vandamme ...` command of the doc parses (SystemExit(0) — --version, --help — counts
    as parsing). The doc maps vdm's commands to `vandamme version`/`--version`, `health
    server|upstream`, `models`, `config setup` and `wrap claude` as well: this fails until each
    of them is in vandamme/engine/cli.py."""
    from vandamme.engine.cli import parser

    commands = _commands()
    assert len(commands) >= 15, commands
    failed = {}
    for command in commands:
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                parser().parse_args(_argv(command))
        except SystemExit as exc:
            if exc.code not in (0, None):
                failed[command] = err.getvalue().strip().splitlines()[-1:]
    assert not failed, f"commands in docs/migrating.md that vandamme.engine.cli.parser() rejects: {failed}"


def test_claude_vdm_console_script_is_declared():
    assert "`claude.vdm`" in DOC
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "claude.vdm" in scripts, f"docs/migrating.md maps claude.vdm, pyproject declares {sorted(scripts)}"


def test_every_endpoint_named_is_served():
    from vandamme.engine.compiler import compile_gateway
    from vandamme.engine.loader import load_spec
    from vandamme.engine.server import create_app

    named = set()
    for span in vandamme_column("HTTP endpoints"):
        m = re.match(r"^(?:(GET|POST) )?(/\S*)$", span)
        if m:
            named.add((m.group(1) or "GET", m.group(2)))
    assert {("POST", "/v1/messages"), ("GET", "/health"), ("GET", "/metrics")} <= named, named
    app = create_app(compile_gateway(load_spec(SPECS, {})), name="migrating_doc")
    served = {(method, "/" + route.path.strip("/")) for route in app.router.routes for method in route.methods}
    missing = sorted((m, p) for m, p in named if (m, "/" + p.strip("/")) not in served)
    assert not missing, f"endpoints named in docs/migrating.md that the app does not serve: {missing}"


# ---------------------------------------------------------------- the worked example

def _example_files() -> dict[str, str]:
    files = {}
    for block in fenced("yaml"):
        first = block.splitlines()[0]
        if first.startswith("# " + EXAMPLE_DIR):
            files[first[2 + len(EXAMPLE_DIR):].strip()] = block
    return files


def _example_env() -> dict[str, str]:
    for block in fenced("sh"):
        lines = block.splitlines()
        if lines and lines[0].strip() == "# " + EXAMPLE_ENV:
            env = {}
            for line in lines[1:]:
                if line.strip() and not line.lstrip().startswith("#"):
                    key, _, value = line.partition("=")
                    env[key.strip()] = " ".join(shlex.split(value))
            return env
    raise AssertionError(f"docs/migrating.md has no sh block starting with '# {EXAMPLE_ENV}'")


def test_worked_example_validates_and_routes_as_the_doc_says(tmp_path):
    from vandamme.engine.compiler import compile_gateway
    from vandamme.engine.expectations import check_expectations
    from vandamme.engine.loader import load_spec
    from vandamme.engine.spec_warnings import inactive_provider_warnings

    files = _example_files()
    assert files, f"no yaml block starting with '# {EXAMPLE_DIR}<file>'"
    env = _example_env()
    folder = tmp_path / "specs"
    shutil.copytree(SPECS, folder)
    for name, text in files.items():
        (folder / name).write_text(text)
    loaded = load_spec(folder, env)
    gw = compile_gateway(loaded)
    expect = loaded.data.get("expect") or []
    assert len(expect) >= 5
    assert f"all {_WORDS[len(expect)]} `expect:` entries met" in " ".join(DOC.split()), \
        f"the doc should say how many expectations the example has ({len(expect)})"
    errors = check_expectations(loaded, gw)
    assert not errors, [str(e) for e in errors]
    for var in env:
        if var.endswith("_API_KEY"):
            name = var[: -len("_API_KEY")].lower()
            assert gw.providers[name].active, (name, gw.providers[name].inactive_reason)
    assert gw.default_provider == "openai"
    warnings = [w.message for w in inactive_provider_warnings(loaded, gw)]
    assert len(warnings) == 1 and "'reasoning'" in warnings[0] and "deepseek" in warnings[0], warnings
    assert "one warning" in DOC


_WORDS = {5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def test_other_yaml_blocks_validate_over_the_default_specs(tmp_path):
    from vandamme.engine.compiler import compile_gateway
    from vandamme.engine.loader import load_spec

    blocks = [b for b in fenced("yaml") if not b.splitlines()[0].startswith("# " + EXAMPLE_DIR)]
    for i, block in enumerate(blocks):
        folder = tmp_path / f"specs{i}"
        shutil.copytree(SPECS, folder)
        (folder / "99-doc.yaml").write_text(block if block.lstrip().startswith("version") else "version: 1\n" + block)
        compile_gateway(load_spec(folder, {}))


def test_vandamme_proxy_examples_are_covered_by_the_tables():
    blocks = fenced("toml")
    assert blocks, "the vandamme-proxy TOML example is missing"
    for block in blocks:
        tomllib.loads(block)
    first_column = [span for row in table_rows(section("Environment variables")) for span in code_spans(row[0])]
    patterns = [re.compile("^" + re.escape(s.split("=", 1)[0]).replace("<P>", "[A-Z0-9_]+")
                           .replace("<NAME>", "[A-Z0-9_]+") + "$") for s in first_column]
    vdm_env = next(b for b in fenced("sh") if b.startswith("# .env (vandamme-proxy)"))
    names = [line.split("=", 1)[0] for line in vdm_env.splitlines() if "=" in line and not line.startswith("#")]
    assert len(names) >= 8
    uncovered = [n for n in names if not any(p.match(n) for p in patterns)]
    assert not uncovered, f"variables of the vandamme-proxy example without a row: {uncovered}"

"""Where the `vandamme` commands find their spec folder, and the `.env` file beside it.

`vandamme config setup` writes a spec folder with a `.env` holding the keys (mode 0600). The
commands that use a folder's keys (`health upstream`, `models`, `wrap claude`) read that `.env`
when it is there, the environment winning over it (as docker compose and python-dotenv do), so a
folder written by `config setup` works without exporting anything first.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Mapping

ENV_FILE = ".env"
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_PLAIN = re.compile(r"^[A-Za-z0-9_./:@+=,~%!-]*$")


def config_dir() -> Path:
    """``$XDG_CONFIG_HOME/vandamme`` (``~/.config/vandamme``): where `config setup` writes by default."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "vandamme"


# The default specs, shipped inside the package (in a checkout, a link to the top-level specs/).
PACKAGED_SPECS = Path(__file__).resolve().parent.parent / "default_specs"


def default_spec_dir() -> str:
    """The folder a command uses when none is given: ``$VDM_SPECS``, else ``specs/`` when the
    current directory has one, else the `config setup` folder when it exists, else the default
    specs that ship inside the package."""
    if os.environ.get("VDM_SPECS"):
        return os.environ["VDM_SPECS"]
    if Path("specs").is_dir():
        return "specs/"
    if config_dir().is_dir():
        return str(config_dir())
    return str(PACKAGED_SPECS)


def parse_env_file(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines: ``export`` allowed, ``#`` comments, single quotes literal, double
    quotes with backslash escapes of ``"``, backslash, ``$`` and backtick (as sh reads them) and
    ``\\n``. Lines that are not assignments are ignored."""
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[7:].lstrip()
        name, eq, value = line.partition("=")
        name = name.strip()
        if not eq or not _NAME.match(name):
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        elif len(value) >= 2 and value[0] == value[-1] == '"':
            value = re.sub(r'\\(["\\$`n])', lambda m: "\n" if m.group(1) == "n" else m.group(1), value[1:-1])
        else:
            value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
        out[name] = value
    return out


def read_env_file(path: str | os.PathLike) -> dict[str, str]:
    try:
        return parse_env_file(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, IsADirectoryError):
        return {}


def environ_for(spec_dir: str, env_file: str | None = None) -> dict[str, str]:
    """The environment a command compiles ``spec_dir`` with: ``os.environ`` over the values of
    ``env_file`` (default: ``spec_dir/.env`` when present)."""
    path = Path(env_file) if env_file else Path(spec_dir) / ENV_FILE
    if env_file and not path.is_file():
        raise FileNotFoundError(f"env file not found: {env_file}")
    values = read_env_file(path)
    # an empty variable counts as unset (as for the overlays): it does not hide the file's value
    return {**values, **{k: v for k, v in os.environ.items() if v or k not in values}}


def quote_env_value(value: str) -> str:
    """A value as `.env` readers (sh ``.``, docker compose, systemd, this module) read it back."""
    if "\n" in value or "\r" in value or "\0" in value:
        raise ValueError("a value in .env cannot hold a line break")
    if _PLAIN.match(value):
        return value
    if "'" not in value:
        return f"'{value}'"
    return '"' + re.sub(r'(["\\$`])', r"\\\1", value) + '"'


def write_env_file(path: str | os.PathLike, values: Mapping[str, str], comments: list[str] = ()) -> None:
    """Write ``values`` to ``path`` created (or truncated) with mode 0600 before anything is in it."""
    lines = [f"# {c}" if c else "#" for c in comments]
    for name, value in values.items():
        if not _NAME.match(name):
            raise ValueError(f"not an environment variable name: {name!r}")
        lines.append(f"{name}={quote_env_value(value)}")
    data = ("\n".join(lines) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT: set it first
    with os.fdopen(fd, "wb") as f:
        f.write(data)

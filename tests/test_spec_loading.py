"""vandamme.engine.loader: reading, YAML errors with exact positions, deep merge, source map."""
from __future__ import annotations

import textwrap

import pytest

from vandamme.sources import SpecErrors
from vandamme.engine.loader import LoadedSpec, load_files, load_spec
from vandamme.sources import Source

MINIMAL = """\
version: 1
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
"""


@pytest.fixture
def specs(tmp_path, monkeypatch):
    """Write spec files into ./specs (cwd = tmp_path) and return a writer."""
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "specs"
    folder.mkdir()

    def write(name: str, text: str):
        (folder / name).write_text(textwrap.dedent(text), encoding="utf-8")
        return folder

    write.folder = folder
    return write


def errors_of(folder, environ=None):
    with pytest.raises(SpecErrors) as info:
        load_spec(folder, environ or {})
    return info.value.errors


def test_minimal_spec_loads(specs):
    folder = specs("00-base.yaml", MINIMAL)
    loaded = load_spec(folder, {})
    assert isinstance(loaded, LoadedSpec)
    assert loaded.data["providers"]["openai"]["format"] == "openai"
    assert loaded.files == ("specs/00-base.yaml",)
    assert loaded.sources[("providers", "openai", "base_url")] == Source("specs/00-base.yaml", 5, 5)
    assert str(loaded.sources[("providers", "openai")]) == "specs/00-base.yaml:3:3"


def test_plain_python_types(specs):
    folder = specs("00-base.yaml", MINIMAL + "server: {port: 8082, request_timeout: 1.5}\n"
                   "logging: {json: true}\n")
    data = load_spec(folder, {}).data
    assert type(data) is dict and type(data["providers"]) is dict
    assert type(data["server"]["port"]) is int
    assert type(data["server"]["request_timeout"]) is float
    assert data["logging"]["json"] is True
    assert type(data["providers"]["openai"]["format"]) is str


def test_list_item_positions(specs):
    folder = specs("00-base.yaml", MINIMAL + '    api_keys:\n      - "!PASSTHRU"\n      - abc\n')
    loaded = load_spec(folder, {})
    assert loaded.data["providers"]["openai"]["api_keys"] == ["!PASSTHRU", "abc"]
    assert loaded.sources[("providers", "openai", "api_keys", 1)] == Source("specs/00-base.yaml", 8, 9)


def test_unquoted_passthru_tag(specs):
    folder = specs("00-base.yaml", MINIMAL + "    api_keys:\n      - !PASSTHRU\n")
    assert load_spec(folder, {}).data["providers"]["openai"]["api_keys"] == ["!PASSTHRU"]


def test_yaml_syntax_error_position(specs):
    specs("00-base.yaml", MINIMAL)
    folder = specs("10-bad.yaml", "server:\n  port: [8082\n  host: x\n")
    errs = errors_of(folder)
    assert len(errs) == 1
    e = errs[0]
    assert e.source.file == "specs/10-bad.yaml"
    assert (e.source.line, e.source.col) == (3, 7)
    assert "YAML syntax error" in e.message
    assert str(e).startswith("specs/10-bad.yaml:3:7: YAML syntax error")


def test_all_files_with_yaml_errors_reported(specs):
    specs("00-a.yaml", "a: [1\n")
    folder = specs("10-b.yaml", "b: 1\nb: 2\n")
    errs = errors_of(folder)
    assert [e.source.file for e in errs] == ["specs/00-a.yaml", "specs/10-b.yaml"]


def test_duplicate_key_position(specs):
    folder = specs("00-base.yaml", MINIMAL + "  anthropic:\n    format: anthropic\n    format: openai\n")
    errs = errors_of(folder)
    assert len(errs) == 1
    e = errs[0]
    assert str(e.source) == "specs/00-base.yaml:8:5"
    assert "duplicate key 'format'" in e.message
    assert "first defined at line 7" in e.message
    assert e.path == ("providers", "anthropic", "format")
    assert str(e) == "specs/00-base.yaml:8:5: providers.anthropic.format: duplicate key 'format' (first defined at line 7)"


def test_missing_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    errs = errors_of(tmp_path / "nope")
    assert len(errs) == 1 and "nope" in str(errs[0]) and "does not exist" in errs[0].message


def test_empty_folder(specs):
    errs = errors_of(specs.folder)
    assert len(errs) == 1
    assert str(errs[0]) == "specs: spec folder 'specs' has no *.yaml or *.yml files"


def test_folder_without_yaml_files(specs):
    (specs.folder / "README.md").write_text("hi")
    (specs.folder / "sub").mkdir()
    (specs.folder / "sub" / "x.yaml").write_text(MINIMAL)
    errs = errors_of(specs.folder)
    assert "specs" in str(errs[0]) and "no *.yaml" in errs[0].message


def test_only_empty_files(specs):
    folder = specs("00-a.yaml", "# nothing\n")
    errs = errors_of(folder)
    assert "is empty" in errs[0].message and "specs" in str(errs[0])


def test_top_level_not_a_mapping(specs):
    specs("00-base.yaml", MINIMAL)
    folder = specs("10-list.yaml", "- a\n- b\n")
    errs = errors_of(folder)
    assert str(errs[0]).startswith("specs/10-list.yaml:1:1: ")
    assert "mapping" in errs[0].message and "list" in errs[0].message


def test_yml_extension_and_sort_order(specs):
    specs("20-b.yml", "server: {port: 2000}\n")
    specs("10-a.yaml", "server: {port: 1000, host: h}\n")
    folder = specs("00-base.yaml", MINIMAL)
    loaded = load_spec(folder, {})
    assert loaded.files == ("specs/00-base.yaml", "specs/10-a.yaml", "specs/20-b.yml")
    assert loaded.data["server"] == {"port": 2000, "host": "h"}
    assert loaded.sources[("server", "port")].file == "specs/20-b.yml"
    assert loaded.sources[("server", "host")].file == "specs/10-a.yaml"


def test_deep_merge_mappings_recursive_lists_replaced(specs):
    specs("00-base.yaml", MINIMAL
          + "    api_keys: [a, b, c]\n"
          + "    aliases: {haiku: gpt-4o-mini, sonnet: gpt-4o}\n"
          + "middleware: [gemini_thought_signatures]\n")
    folder = specs("10-over.yaml", """\
    providers:
      openai:
        api_keys: [z]
        aliases: {sonnet: gpt-4.1}
    middleware: []
    """)
    loaded = load_spec(folder, {})
    openai = loaded.data["providers"]["openai"]
    assert openai["api_keys"] == ["z"]
    assert openai["aliases"] == {"haiku": "gpt-4o-mini", "sonnet": "gpt-4.1"}
    assert openai["base_url"] == "https://api.openai.com/v1"
    assert loaded.data["middleware"] == []
    s = loaded.sources
    assert s[("providers", "openai", "api_keys")].file == "specs/10-over.yaml"
    assert s[("providers", "openai", "api_keys", 0)].file == "specs/10-over.yaml"
    # the replaced list's old items are forgotten
    assert ("providers", "openai", "api_keys", 1) not in s
    assert ("middleware", 0) not in s
    assert s[("providers", "openai", "aliases", "haiku")].file == "specs/00-base.yaml"
    assert s[("providers", "openai", "aliases", "sonnet")].file == "specs/10-over.yaml"


def test_scalar_replaced_by_mapping_drops_sources(specs):
    specs("00-base.yaml", MINIMAL + "headers: {X-A: a}\n")
    folder = specs("10-over.yaml", "headers: {X-B: b}\n")
    loaded = load_spec(folder, {})
    assert loaded.data["headers"] == {"X-A": "a", "X-B": "b"}


def test_unquoted_date_becomes_string(specs):
    folder = specs("00-base.yaml", MINIMAL + "    api_version: 2024-10-21\n")
    assert load_spec(folder, {}).data["providers"]["openai"]["api_version"] == "2024-10-21"


def test_load_files_does_not_validate(specs):
    folder = specs("00-base.yaml", "whatever: 1\n")
    data, sources, files = load_files(folder)
    assert data == {"whatever": 1} and files == ("specs/00-base.yaml",)


def test_absolute_path_outside_cwd(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "a.yaml").write_text(MINIMAL)
    monkeypatch.chdir("/")
    loaded = load_spec(folder, {})
    assert loaded.files[0].endswith("s/a.yaml")


def test_default_specs_load():
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    loaded = load_spec(root / "specs", {})
    data = loaded.data
    assert data["default_provider"] == "openai"
    assert set(data["providers"]) >= {"openai", "anthropic", "azure", "gemini", "poe", "openrouter",
                                      "groq", "deepseek", "ollama", "zai"}
    for name, prov in data["providers"].items():
        assert not prov.get("api_keys"), name
    assert data["providers"]["ollama"]["requires_key"] is False
    assert data["providers"]["anthropic"]["format"] == "anthropic"
    assert data["providers"]["azure"]["api_style"] == "azure"
    assert data["providers"]["azure"]["api_version"] == "2024-10-21"
    assert data["server"]["port"] == 8082 and data["server"]["host"] == "127.0.0.1"
    assert data["routes"] == [] and data["middleware"] == []
    assert data["telemetry"]["otlp_endpoint"] is None
    assert data["providers"]["gemini"]["aliases"]["haiku"] == "gemini-2.5-flash"
    assert "fast" in data["aliases"]


def test_default_specs_with_key(monkeypatch):
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    loaded = load_spec("specs/", {"OPENAI_API_KEY": "k1 k2"})
    assert loaded.data["providers"]["openai"]["api_keys"] == ["k1", "k2"]
    assert str(loaded.sources[("providers", "openai", "api_keys")]) == "env:OPENAI_API_KEY"
    assert str(loaded.sources[("providers", "openai", "api_keys", 1)]) == "env:OPENAI_API_KEY"
    assert loaded.sources[("providers", "openai", "base_url")].file == "specs/10-providers.yaml"


def test_default_spec_files_have_schema_header():
    import pathlib
    root = pathlib.Path(__file__).resolve().parent.parent
    files = sorted((root / "specs").glob("*.y*ml"))
    assert files
    for f in files:
        assert "# yaml-language-server: $schema=../schemas/vandamme.schema.json" in f.read_text(), f

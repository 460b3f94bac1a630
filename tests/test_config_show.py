"""vandamme.engine.config_show.render_config: effective YAML, source comments, masked secrets."""
from __future__ import annotations

import pathlib

from ruamel.yaml import YAML

from vandamme.engine.config_show import mask_secret, render_config
from vandamme.engine.loader import LoadedSpec, load_spec
from vandamme.sources import Source, SourceMap

SPEC = """\
version: 1
providers:
  openai:
    format: openai
    base_url: https://api.openai.com/v1
    api_keys: ["sk-abcdefgh12345678", short, "!PASSTHRU"]
    headers:
      Authorization: "Bearer tok-0123456789wxyz"
      X-Api-Key: tiny
      X-Trace: "{{ request.id }}"
      My-Token-Header: abcdefghijklmnop
headers:
  X-Gateway: vandamme
routes:
  - match: {model: "*sonnet*"}
    to: openai:gpt-4o
"""


def load(tmp_path, monkeypatch, environ=None):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "10-providers.yaml").write_text(SPEC)
    return load_spec("specs", environ or {})


def line_with(text, needle):
    hits = [ln for ln in text.splitlines() if needle in ln]
    assert hits, f"{needle!r} not in output:\n{text}"
    return hits[0]


def test_annotations_and_masking(tmp_path, monkeypatch):
    out = render_config(load(tmp_path, monkeypatch, {"PORT": "9000"}))
    assert line_with(out, "base_url:").endswith("# specs/10-providers.yaml:5")
    assert line_with(out, "port:") == "  port: 9000 # env:PORT"
    # secrets
    assert "sk-abcdefgh12345678" not in out and "12345678" not in out
    assert line_with(out, "****5678").endswith("# specs/10-providers.yaml:6")
    assert line_with(out, '- "****" #')
    assert line_with(out, "!PASSTHRU")
    assert "tok-0123456789wxyz" not in out
    assert line_with(out, "Authorization:").split("#")[0].strip() == 'Authorization: "****wxyz"'
    assert line_with(out, "X-Api-Key:").split("#")[0].strip() == 'X-Api-Key: "****"'
    assert line_with(out, "My-Token-Header:").split("#")[0].strip() == 'My-Token-Header: "****mnop"'
    assert "abcdefghijklmnop" not in out
    # non-secret header shown as is
    assert "'{{ request.id }}'" in line_with(out, "X-Trace:")
    assert line_with(out, "X-Gateway:") == "  X-Gateway: vandamme # specs/10-providers.yaml:13"
    assert line_with(out, "to: openai:gpt-4o").endswith("# specs/10-providers.yaml:16")
    assert "'*sonnet*'" in line_with(out, "model:")


def test_every_leaf_line_is_annotated(tmp_path, monkeypatch):
    out = render_config(load(tmp_path, monkeypatch, {"OPENAI_API_KEY": "k1 k2", "HOST": "h"}))
    for ln in out.splitlines()[1:]:
        if not ln.rstrip().endswith(":") and ln.strip() != "-":
            assert " # specs/" in ln or " # env:" in ln, ln


def test_env_sources_and_output_is_yaml(tmp_path, monkeypatch):
    loaded = load(tmp_path, monkeypatch, {"OPENAI_API_KEY": "envkey-000000001111 k2", "HOST": "0.0.0.0"})
    out = render_config(loaded)
    assert "envkey-000000001111" not in out
    assert line_with(out, "****1111").endswith("# env:OPENAI_API_KEY")
    assert line_with(out, "host:") == "  host: 0.0.0.0 # env:HOST"
    parsed = YAML(typ="safe").load(out)
    # apart from masked secrets, the YAML round-trips to the effective spec
    assert parsed["routes"] == loaded.data["routes"]
    assert parsed["server"] == loaded.data["server"]
    assert parsed["providers"]["openai"]["headers"]["X-Trace"] == "{{ request.id }}"
    assert parsed["providers"]["openai"]["api_keys"] == ["****1111", "****"]


def test_scalars_quoted_when_needed():
    data = {"a": "true", "b": "123", "c": "x: y", "d": None, "e": 1.5, "f": False, "g": "", "h": "a #b",
            "i": "null", "j": ["-x", "@y"], "k": {}, "l": []}
    sources = SourceMap({(): Source("s.yaml", 1, 1)})
    out = render_config(LoadedSpec(data=data, sources=sources, files=("s.yaml",)))
    assert YAML(typ="safe").load(out) == data
    assert "d: null # s.yaml:1" in out


def test_mask_secret():
    assert mask_secret("abcdefghijkl") == "****ijkl"
    assert mask_secret("abcdefghijk") == "****"
    assert mask_secret("!PASSTHRU") == "!PASSTHRU"


def test_default_specs_render(monkeypatch):
    root = pathlib.Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    out = render_config(load_spec("specs/", {"OPENAI_API_KEY": "sk-live-abcdefghijklmnop"}))
    assert "sk-live-abcdefghijklmnop" not in out and "****mnop" in out
    assert line_with(out, "port: 8082").endswith("# specs/00-server.yaml:8")


from hypothesis import given, settings, strategies as st  # noqa: E402

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6),
                     st.floats(allow_nan=False, allow_infinity=False, width=32),
                     st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=20))
_keys = st.text(st.characters(whitelist_categories=("Ll", "Lu", "Nd"), whitelist_characters="-_ .*"),
                min_size=1, max_size=10).filter(lambda k: k not in ("api_keys", "headers"))
_trees = st.recursive(_scalars, lambda kids: st.one_of(st.lists(kids, max_size=3),
                                                       st.dictionaries(_keys, kids, max_size=3)),
                      max_leaves=12)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_keys, _trees, max_size=4))
def test_render_round_trips(data):
    out = render_config(LoadedSpec(data=data, sources=SourceMap({(): Source("s.yaml", 1, 1)}), files=()))
    assert (YAML(typ="safe").load(out) or {}) == data


def test_gemini_env_overlay_shows_as_a_declaration(monkeypatch):
    """GEMINI_THOUGHT_SIGNATURES_ENABLED declares the middleware; config show says so."""
    root = pathlib.Path(__file__).resolve().parent.parent
    monkeypatch.chdir(root)
    on = load_spec(root / "specs", {"GEMINI_THOUGHT_SIGNATURES_ENABLED": "true",
                                    "G2_BASE_URL": "https://generativelanguage.googleapis.com/v1beta/openai",
                                    "G2_API_FORMAT": "openai"})
    text = render_config(on)
    assert "- gemini_thought_signatures # env:GEMINI_THOUGHT_SIGNATURES_ENABLED" in text  # g2
    assert "- gemini_thought_signatures # specs/10-providers.yaml:" in text  # gemini, as declared
    off = render_config(load_spec(root / "specs", {"GEMINI_THOUGHT_SIGNATURES_ENABLED": "false"}))
    assert "middleware: [] # env:GEMINI_THOUGHT_SIGNATURES_ENABLED" in off
    assert "gemini_thought_signatures" not in off

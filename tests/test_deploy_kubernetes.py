"""deploy/kubernetes/: the kustomize base and the otel-collector overlay, rendered and checked.

Rendering: with kustomize itself when it is here (`kubectl kustomize`, kustomize v4 or later, or
a standalone `kustomize`), with `--load-restrictor LoadRestrictionsNone` because the ConfigMap is
generated from the repository's specs/ folder, outside the kustomization. Where neither is
installed, `render_like_kustomize` below renders the same files: it implements exactly the
kustomization fields these files use (resources, configMapGenerator with files, JSON 6902 `add`
patches), kustomize's ConfigMap name hash and its renaming of ConfigMap references, and refuses
anything else. When kustomize is present, a test checks the two renderings are identical, so
the fallback cannot drift from the real thing.

Every rendered manifest (and secret.example.yaml) is validated with kubernetes-validate against
the pinned Kubernetes version below, strictly (unknown fields are errors). Nothing is applied to
a cluster: none runs here.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from harness import ROOT, run_cli

try:
    import kubernetes_validate
except ImportError:  # the test extra; `make test` installs it
    kubernetes_validate = None


def _validator():
    if kubernetes_validate is None:
        pytest.skip("kubernetes-validate is not installed (pip install -e '.[test]'): manifests not validated")
    return kubernetes_validate

K8S_VERSION = "1.32.0"
KUBE_DIR = ROOT / "deploy" / "kubernetes"
BASE = KUBE_DIR / "base"
OVERLAY = KUBE_DIR / "overlays" / "otel-collector"
SPECS = ROOT / "specs"
LOAD_ANYWHERE = ["--load-restrictor", "LoadRestrictionsNone"]

# What Claude Code sends (tests/test_claude_code.py, specs/20-aliases.yaml): its tiers' model
# names, dated and undated, and the bare aliases.
CLAUDE_CODE_MODELS = [
    "claude-3-5-haiku-latest", "claude-3-5-haiku-20241022",
    "claude-sonnet-4-5", "claude-sonnet-4-5-20250929",
    "claude-opus-4-1", "claude-opus-4-1-20250805",
    "haiku", "sonnet", "opus",
]


def _load_all(text: str) -> list[dict]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


# ---------------------------------------------------------------- rendering


def _go_json(value) -> str:
    """encoding/json.Marshal of maps of strings: sorted keys, no spaces, HTML-safe escapes."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def kustomize_configmap_hash(data: dict[str, str]) -> str:
    """kustomize's api/hasher for a generated ConfigMap: sha256 of {"data", "kind", "name"} as Go
    JSON, the first 10 hex digits with 0 1 3 a e mapped to g h k m t. The name is always empty:
    the hasher looks it up with a path kyaml does not split, and its tests pin that encoding."""
    digest = hashlib.sha256(_go_json({"data": data, "kind": "ConfigMap", "name": ""}).encode()).hexdigest()
    return digest[:10].translate(str.maketrans("013ae", "ghkmt"))


def _pod_specs(doc: dict):
    spec = doc.get("spec") or {}
    if doc["kind"] == "Pod":
        yield spec
    elif isinstance(spec.get("template"), dict):
        yield spec["template"].get("spec") or {}
    elif doc["kind"] == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def _rename_configmap_refs(docs: list[dict], renames: dict[str, str]) -> None:
    for doc in docs:
        for pod in _pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    ref = volume["configMap"]
                    ref["name"] = renames.get(ref["name"], ref["name"])
                for source in (volume.get("projected") or {}).get("sources", []):
                    if "configMap" in source:
                        ref = source["configMap"]
                        ref["name"] = renames.get(ref["name"], ref["name"])
            for container in pod.get("containers", []) + pod.get("initContainers", []):
                for env_from in container.get("envFrom", []):
                    if "configMapRef" in env_from:
                        ref = env_from["configMapRef"]
                        ref["name"] = renames.get(ref["name"], ref["name"])
                for env in container.get("env", []):
                    ref = (env.get("valueFrom") or {}).get("configMapKeyRef")
                    if ref:
                        ref["name"] = renames.get(ref["name"], ref["name"])


def _json_pointer_add(doc: dict, path: str, value) -> None:
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    last = parts[-1]
    if isinstance(node, list):
        node.insert(len(node) if last == "-" else int(last), value)
    else:
        node[last] = value


def _targets(doc: dict, target: dict) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    checks = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(fnmatch.fnmatchcase(checks[k], v) for k, v in target.items())


def render_like_kustomize(directory: Path) -> list[dict]:
    """`kustomize build --load-restrictor LoadRestrictionsNone DIRECTORY` for the fields used in
    deploy/kubernetes/ (anything else raises, rather than render something kustomize would not)."""
    k = YAML(typ="safe").load((directory / "kustomization.yaml").read_text())
    unsupported = set(k) - {"apiVersion", "kind", "resources", "configMapGenerator", "patches"}
    if unsupported:
        raise NotImplementedError(f"{directory}: kustomization fields {sorted(unsupported)}")
    docs: list[dict] = []
    for resource in k.get("resources", []):
        path = directory / resource
        docs += render_like_kustomize(path) if path.is_dir() else _load_all(path.read_text())
    renames = {}
    for generator in k.get("configMapGenerator", []):
        if set(generator) - {"name", "files"}:
            raise NotImplementedError(f"{directory}: configMapGenerator fields {sorted(generator)}")
        data = {}
        for entry in generator["files"]:
            key, sep, source = entry.partition("=")
            if not sep:
                key, source = Path(entry).name, entry
            data[key] = (directory / source).read_bytes().decode("utf-8")
        name = f"{generator['name']}-{kustomize_configmap_hash(data)}"
        renames[generator["name"]] = name
        docs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data})
    _rename_configmap_refs(docs, renames)
    for patch in k.get("patches", []):
        if set(patch) - {"target", "patch"}:
            raise NotImplementedError(f"{directory}: patch fields {sorted(patch)}")
        operations = YAML(typ="safe").load(patch["patch"])
        matched = [d for d in docs if _targets(d, patch["target"])]
        assert matched, f"{directory}: a patch matches nothing: {patch['target']}"
        for doc in matched:
            for op in operations:
                if op["op"] != "add":
                    raise NotImplementedError(f"JSON patch op {op['op']}")
                _json_pointer_add(doc, op["path"], op["value"])
    return docs


def _kustomize_command() -> list[str] | None:
    """The real kustomize, if one is here and recent enough (v4+: `patches`, load restrictor)."""
    if shutil.which("kustomize"):
        out = subprocess.run(["kustomize", "version"], capture_output=True, text=True, timeout=60).stdout
        if (m := re.search(r"v?(\d+)\.", out)) and int(m.group(1)) >= 4:
            return ["kustomize", "build", *LOAD_ANYWHERE]
    if shutil.which("kubectl"):
        try:
            out = subprocess.run(["kubectl", "version", "--client", "-o", "json"], capture_output=True,
                                 text=True, timeout=60).stdout
            version = json.loads(out).get("kustomizeVersion", "")
        except (ValueError, subprocess.SubprocessError):
            version = ""
        if (m := re.match(r"v?(\d+)\.", version)) and int(m.group(1)) >= 4:
            return ["kubectl", "kustomize", *LOAD_ANYWHERE]
    return None


KUSTOMIZE = _kustomize_command()


def render(directory: Path) -> list[dict]:
    if KUSTOMIZE is None:
        return render_like_kustomize(directory)
    result = subprocess.run([*KUSTOMIZE, str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return _load_all(result.stdout)


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[dict]:
    return render(OVERLAY)


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name or ''}: {len(found)} found"
    return found[0]


def _by_identity(docs):
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


# ---------------------------------------------------------------- tests


def test_kustomize_renders_as_the_fallback_does():
    if KUSTOMIZE is None:
        pytest.skip("neither kustomize nor a kubectl with kustomize v4+ is installed: "
                    "the manifests were rendered by the test's own renderer only")
    for directory in (BASE, OVERLAY):
        assert _by_identity(render(directory)) == _by_identity(render_like_kustomize(directory)), directory


def test_the_configmap_hash_is_kustomizes():
    # Test vectors of kustomize's api/hasher/hasher_test.go (TestConfigMapHash).
    assert kustomize_configmap_hash({"one": ""}) == "9g67k2htb6"


def test_every_rendered_manifest_is_valid_kubernetes(base, overlay):
    kubernetes_validate = _validator()
    secret = _load_all((KUBE_DIR / "secret.example.yaml").read_text())
    checked = 0
    for doc in [*base, *overlay, *secret]:
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.path}: {exc.message}")
        checked += 1
    assert {d["kind"] for d in base} == {"ConfigMap", "Deployment", "Service",
                                         "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert checked == len(base) + len(overlay) + 1


def test_validation_is_strict():
    """Sanity: the validator rejects what a cluster would (so the test above is not vacuous)."""
    kubernetes_validate = _validator()
    doc = json.loads(json.dumps(one(render_like_kustomize(BASE), "Deployment")))
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_the_configmap_is_generated_from_every_shipped_spec(base):
    kustomization = YAML(typ="safe").load((BASE / "kustomization.yaml").read_text())
    (generator,) = [g for g in kustomization["configMapGenerator"] if g["name"] == "vandamme-specs"]
    listed = sorted((BASE / f).resolve() for f in generator["files"])
    assert listed == sorted(SPECS.glob("*.yaml")), "a spec file is missing from configMapGenerator"
    configmaps = [d for d in base if d["kind"] == "ConfigMap"]
    assert len(configmaps) == 1 and configmaps[0]["metadata"]["name"].startswith("vandamme-specs-")
    data = configmaps[0]["data"]
    assert sorted(data) == sorted(p.name for p in SPECS.glob("*.yaml"))
    for path in SPECS.glob("*.yaml"):
        assert data[path.name].encode("utf-8") == path.read_bytes(), f"{path.name} differs"


def test_the_deployment_runs_the_gateway_safely(base):
    deployment = one(base, "Deployment", "vandamme")
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (port,) = container["ports"]
    assert port["name"] == "http" and port["containerPort"] == 8082
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["HOST"] == "0.0.0.0" and env["PORT"] == "8082"
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    resources = container["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] and resources["limits"]["memory"]
    # The grace period covers the preStop pause, the drain deadline and Sanic's close.
    schema = json.loads((ROOT / "schemas" / "vandamme.schema.json").read_text())
    drain = schema["properties"]["server"]["properties"]["drain_timeout"]["default"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain + 5
    # Non-root, read-only root, nothing to escalate with; /tmp writable.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True and security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    # The specs the image serves (/app/specs) come from the generated ConfigMap.
    specs_volume = volumes[mounts["/app/specs"]]
    one(base, "ConfigMap", specs_volume["configMap"]["name"])
    # Keys from the documented Secret.
    (env_from,) = container["envFrom"]
    secret = one(_load_all((KUBE_DIR / "secret.example.yaml").read_text()), "Secret")
    assert env_from["secretRef"]["name"] == secret["metadata"]["name"]
    assert not any(d["kind"] == "Secret" for d in base), "no Secret (no key) is applied by default"


def test_service_hpa_and_pdb_select_the_gateway(base):
    deployment = one(base, "Deployment", "vandamme")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(base, "Service", "vandamme")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    hpa = one(base, "HorizontalPodAutoscaler", "vandamme")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "vandamme"}
    assert hpa["spec"]["minReplicas"] >= 2
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
    pdb = one(base, "PodDisruptionBudget", "vandamme")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) < hpa["spec"]["minReplicas"]


def test_the_secret_example_feeds_the_environment_overlays():
    secret = one(_load_all((KUBE_DIR / "secret.example.yaml").read_text()), "Secret")
    env = secret["stringData"]
    known = {"VDM_API_KEYS", "VDM_REDIS_URL"}
    for name in env:
        assert name in known or re.fullmatch(r"[A-Z][A-Z0-9_]*_(API_KEY|BASE_URL)", name), name
    result = run_cli("validate", str(SPECS), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert env["OPENAI_API_KEY"] not in result.stdout + result.stderr


def test_the_collector_overlay_points_at_a_collector_it_defines(overlay):
    gateway = one(overlay, "Deployment", "vandamme")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    endpoint = env["OTEL_EXPORTER_OTLP_ENDPOINT"]
    m = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", endpoint)
    assert m, endpoint
    service = one(overlay, "Service", m.group(1))
    port = next(p for p in service["spec"]["ports"] if p["port"] == int(m.group(2)))
    backends = [d for d in overlay if d["kind"] == "Deployment"
                and service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
    assert len(backends) == 1 and backends[0]["metadata"]["name"] != "vandamme"
    collector = backends[0]["spec"]["template"]["spec"]
    container = collector["containers"][0]
    container_port = next(p for p in container["ports"] if p["name"] == port["targetPort"])
    # The collector reads the generated config, whose OTLP/HTTP receiver listens on that port.
    config_arg = next(a for a in container["args"] if a.startswith("--config="))
    mount = next(m for m in container["volumeMounts"] if config_arg.split("=", 1)[1].startswith(m["mountPath"]))
    volume = next(v for v in collector["volumes"] if v["name"] == mount["name"])
    configmap = one(overlay, "ConfigMap", volume["configMap"]["name"])
    config = YAML(typ="safe").load(configmap["data"][Path(config_arg.split("=", 1)[1]).name])
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(f":{container_port['containerPort']}")
    assert "otlp" in config["service"]["pipelines"]["traces"]["receivers"]
    for kind in ("receivers", "processors", "exporters"):
        for component in config["service"]["pipelines"]["traces"][kind]:
            assert component in config[kind]
    # The overlay changes nothing else of the base.
    base_gateway = one(render(BASE), "Deployment", "vandamme")["spec"]["template"]["spec"]["containers"][0]
    assert [e for e in gateway["env"] if e["name"] != "OTEL_EXPORTER_OTLP_ENDPOINT"] == base_gateway["env"]


def _strip_sources(node):
    """`explain` names the file and line each step came from; the folders differ, the rest must not."""
    if isinstance(node, dict):
        return {k: _strip_sources(v) for k, v in node.items() if k != "source"}
    if isinstance(node, list):
        return [_strip_sources(v) for v in node]
    return node


def test_claude_code_models_resolve_through_the_configmap_as_through_specs(base, tmp_path):
    configmap = one(base, "ConfigMap")
    mounted = tmp_path / "app-specs"           # what the pod sees at /app/specs
    mounted.mkdir()
    for name, text in configmap["data"].items():
        (mounted / name).write_bytes(text.encode("utf-8"))
    env = {"OPENAI_API_KEY": "sk-test"}        # as the Secret would provide
    for model in CLAUDE_CODE_MODELS:
        results = []
        for folder in (SPECS, mounted):
            result = run_cli("explain", model, str(folder), "--format", "json", env=env)
            assert result.returncode == 0, result.stdout + result.stderr
            results.append(json.loads(result.stdout))
        shipped, rendered = results
        assert _strip_sources(rendered) == _strip_sources(shipped), model
        # And the resolution is the one the issue was about: onto the default provider's alias,
        # never Claude Code's name sent to OpenAI unchanged.
        final = rendered["final"]
        assert final["provider"] == "openai" and not final["model"].startswith("claude"), (model, final)

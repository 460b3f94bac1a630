"""``expect:``: routing tests kept in the spec, checked by ``vandamme validate``.

Each entry describes a request (``model``, ``headers``, ``tokens``, ``thinking``, ``tools``) and
what the gateway must do with it (``resolves_to``, ``fallbacks``, ``middleware``, or ``error``).
The answer is the runtime's own: :meth:`ResolveTarget.resolve
<vandamme.transforms.resolve_stage.ResolveTarget.resolve>` and ``Gateway.pipeline_for``, in the as-declared
mode of ``vandamme explain`` (every provider counts as configured, so CI without secrets checks the
routing the specs describe). A failed expectation is a SpecError at the entry's key:
``specs/40-expect.yaml:3:42: expect[1].resolves_to: expected openai:o3, got openai:gpt-4o``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from vandamme.transforms.resolve_stage import ResolveTarget
from vandamme.transforms.routing import RequestFeatures
from vandamme.sources import SpecError

from .explain import declared_resolver, request_features
from .loader import LoadedSpec


def check_expectations(loaded: LoadedSpec, gateway: Any) -> list[SpecError]:
    """Every failed expectation of ``loaded``'s ``expect:`` list, checked on ``gateway`` (compiled
    from ``loaded``)."""
    entries = loaded.data.get("expect") or []
    if not entries:
        return []
    resolver = declared_resolver(gateway)
    errors: list[SpecError] = []
    for index, entry in enumerate(entries):
        for key, message in failures(entry, resolver, gateway.pipeline_for):
            path = ("expect", index, key)
            errors.append(SpecError(message, loaded.sources.nearest(path), path))
    return errors


def entry_features(entry: Mapping[str, Any]) -> RequestFeatures:
    """The request an entry describes: its model and headers, ``thinking: true`` as an enabled
    thinking block, ``tools: N`` as N tools, ``tokens`` as the input-token count."""
    body: dict[str, Any] = {}
    if entry.get("thinking"):
        body["thinking"] = {"type": "enabled", "budget_tokens": 1024}
    if entry.get("tools"):
        body["tools"] = [{"name": f"tool_{i}", "input_schema": {"type": "object"}}
                         for i in range(int(entry["tools"]))]
    return request_features(entry["model"], entry.get("headers"), entry.get("tokens"), body)


def failures(entry: Mapping[str, Any], resolver: ResolveTarget,
             pipeline_for: Callable[[str, Any], Any]) -> list[tuple[str, str]]:
    """``[(key, message)]``: what of ``entry`` does not hold."""
    decided = resolver.resolve(entry["model"], entry_features(entry))
    out: list[tuple[str, str]] = []
    if decided.error is not None:
        got = f"error {decided.status}: {decided.error}"
        if "error" in entry and str(entry["error"]) not in decided.error:
            out.append(("error", f"expected an error containing '{entry['error']}', got {got}"))
        if "resolves_to" in entry:
            out.append(("resolves_to", f"expected {entry['resolves_to']}, got {got}"))
        return out
    if "error" in entry:
        out.append(("error", f"expected an error containing '{entry['error']}', got {decided.target}"))
    if "resolves_to" in entry and decided.target != entry["resolves_to"]:
        out.append(("resolves_to", f"expected {entry['resolves_to']}, got {decided.target}"))
    if "fallbacks" in entry and list(decided.fallbacks) != list(entry["fallbacks"]):
        out.append(("fallbacks", f"expected {_names(entry['fallbacks'])}, got {_names(decided.fallbacks)}"))
    if "middleware" in entry:
        pipeline = pipeline_for(decided.targets[0][0].name, decided.route)
        got = list(pipeline.middleware) if pipeline is not None else []
        if got != list(entry["middleware"]):
            out.append(("middleware", f"expected {_names(entry['middleware'])}, got {_names(got)}"))
    return out


def _names(items) -> str:
    return "[" + ", ".join(str(i) for i in items) + "]"


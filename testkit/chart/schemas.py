"""Offline validation of Kubernetes objects, as the API server would check them.

Built-in kinds are checked against the Kubernetes JSON schema of the version
fixtures/platform.yaml pins (`kubernetesVersion`; the schemas ship with the
`kubernetes-validate` package), in strict mode: an
unknown field is an error, as with ``kubectl apply`` (server-side field
validation). Custom resources are checked against the CRDs in ``crds/`` next to
this module (vendored at the versions the platform installs: platform.yaml `crds`),
with unknown fields rejected too (the API server would drop them
silently, which hides typos). Names and labels are checked for the syntax the
API server enforces but the JSON schemas do not express.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

from testkit.platform import platform

KUBE_VERSION = platform().kubernetes_version
CRD_DIR = Path(__file__).resolve().parent / "crds"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS_1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
# Kinds whose name becomes a DNS label (a Service's name is its DNS name).
_DNS_1035_KINDS = {"Service"}
# Kinds whose name becomes a label value (a Job's pods carry job-name: <name>).
_LABEL_NAMED_KINDS = {"Job"}


class SchemaError(ValueError):
    """An object the API server would reject; the message names the object and the field."""


def describe(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{obj.get('kind')}/{meta.get('name')} ({obj.get('apiVersion')})"


def validate_object(obj: Mapping[str, Any], kube_version: str = KUBE_VERSION) -> None:
    """Raise SchemaError unless `obj` is a valid object of its kind."""
    if not isinstance(obj, Mapping) or not obj.get("apiVersion") or not obj.get("kind"):
        raise SchemaError(f"not a Kubernetes object (apiVersion and kind required): {obj!r:.200}")
    crd = custom_resource_definitions().get(_group_kind(obj))
    if crd is not None:
        _validate_custom_resource(obj, crd, kube_version)
    else:
        _validate_builtin(obj, kube_version)
    _validate_names(obj)


def _group_kind(obj: Mapping[str, Any]) -> tuple[str, str]:
    group = obj["apiVersion"].rpartition("/")[0]
    return group, obj["kind"]


def _validate_builtin(obj: Mapping[str, Any], kube_version: str) -> None:
    try:
        kubernetes_validate.validate(dict(obj), kube_version, strict=True)
    except kubernetes_validate.SchemaNotFoundError as exc:
        raise SchemaError(
            f"{describe(obj)}: no schema for this kind in Kubernetes {kube_version} and no CRD in {CRD_DIR}"
        ) from exc
    except kubernetes_validate.ValidationError as exc:
        path = ".".join(str(p) for p in exc.path) or "(root)"
        raise SchemaError(f"{describe(obj)}: {path}: {exc.message}") from exc


@functools.cache
def custom_resource_definitions() -> dict[tuple[str, str], dict]:
    """(group, kind) -> CRD, for every CRD file in CRD_DIR."""
    crds = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                spec = doc["spec"]
                crds[(spec["group"], spec["names"]["kind"])] = doc
    return crds


def _validate_custom_resource(obj: Mapping[str, Any], crd: Mapping[str, Any], kube_version: str) -> None:
    version = obj["apiVersion"].rpartition("/")[2]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served", True)}
    if version not in served:
        raise SchemaError(f"{describe(obj)}: version {version} is not served by the CRD (served: {sorted(served)})")
    schema = _json_schema(crd["metadata"]["name"], version)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(dict(obj)), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        path = ".".join(str(p) for p in first.path) or "(root)"
        raise SchemaError(f"{describe(obj)}: {path}: {first.message}")
    # ObjectMeta is the same for every kind: check it through a carrier of a built-in kind.
    _validate_builtin({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj.get("metadata") or {}}, kube_version)


@functools.cache
def _json_schema(crd_name: str, version: str) -> dict:
    for crd in custom_resource_definitions().values():
        if crd["metadata"]["name"] == crd_name:
            for v in crd["spec"]["versions"]:
                if v["name"] == version:
                    return _strict(copy.deepcopy(v["schema"]["openAPIV3Schema"]))
    raise KeyError(f"{crd_name} {version}")


def _strict(node: Any) -> Any:
    """OpenAPI v3 structural schema -> JSON schema that rejects unknown fields and honours nullable."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if out.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _validate_names(obj: Mapping[str, Any]) -> None:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    pattern = _DNS_1035_LABEL if obj["kind"] in _DNS_1035_KINDS else None
    if pattern is not None:
        if len(name) > 63 or not pattern.match(name):
            raise SchemaError(f"{describe(obj)}: metadata.name must be a DNS-1035 label (63 characters at most)")
    elif len(name) > 253 or not all(_DNS_LABEL.match(part) for part in name.split(".")):
        raise SchemaError(f"{describe(obj)}: metadata.name must be a DNS-1123 subdomain")
    if obj["kind"] in _LABEL_NAMED_KINDS and len(name) > 63:
        raise SchemaError(f"{describe(obj)}: metadata.name must fit a label value (63 characters at most)")
    for where, labels in _label_maps(obj):
        for key, value in (labels or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value):
                raise SchemaError(f"{describe(obj)}: {where}[{key}]: invalid label value {value!r}")


def _label_maps(obj: Mapping[str, Any]):
    yield "metadata.labels", (obj.get("metadata") or {}).get("labels")
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    yield "spec.template.metadata.labels", template.get("labels")

"""KServe's API types as a KServe release publishes them in its Python SDK, used as a schema.

KServe's CRDs and its SDK's models are both generated from the same Go types (`pkg/apis/serving`):
the CRDs through controller-gen, the SDK through the OpenAPI document. The SDK's wheel is on PyPI, so
`make install` downloads it (pinned, `KSERVE_SDK_RELEASE`, Apache-2.0) into `.venv/kserve-sdk/` without
installing it, and this module reads its `kserve/models/*.py` with `ast`: no KServe code is imported or
run, and none of KServe's dependencies enter the project's environment. From each generated class it
takes the JSON field names and their types (`attribute_map`, `openapi_types`) and the fields the class
requires (its setters' "must not be `None`" checks). Kubernetes' own types inside them (`V1Container`,
`V1ObjectMeta`, quantities ...) are checked strictly against kubernetes-validate's schemas for one
Kubernetes version, so a misspelling inside a container spec is caught too.

What it catches: unknown fields at any depth (which the API server would prune silently), wrong JSON
types, missing required fields. What only the CRDs know (enums, patterns, CEL rules) is checked by
test_kserve.py's CRD path where those files are at hand.
"""

from __future__ import annotations

import ast
import functools
import json
import os
import re
import zipfile
from dataclasses import dataclass
from email.parser import HeaderParser
from pathlib import Path
from typing import Any

from tests.helpers.servers import REPO

KSERVE_SDK_RELEASE = "0.21.0"  # also pinned in the Makefile (KSERVE_SDK)
SDK_FOLDER = Path(os.environ.get("RECAP_KSERVE_SDK", REPO / ".venv" / "kserve-sdk"))
WHEEL_NAME = f"kserve-{KSERVE_SDK_RELEASE}-py3-none-any.whl"
# The top-level class of each KServe kind the deploy folder uses.
KINDS = {
    ("serving.kserve.io/v1alpha1", "ServingRuntime"): "V1alpha1ServingRuntime",
    ("serving.kserve.io/v1alpha1", "ClusterServingRuntime"): "V1alpha1ClusterServingRuntime",
    ("serving.kserve.io/v1beta1", "InferenceService"): "V1beta1InferenceService",
}
_REQUIRED = re.compile(r"Invalid value for `(\w+)`, must not be `None`")
_LIST = re.compile(r"^list\[(.+)\]$")
_DICT = re.compile(r"^dict\(str, (.+)\)$")
# Kubernetes types the SDK names without the `V1` convention -> kubernetes-validate's definition names.
_KUBERNETES_ALIASES = {
    "ResourceQuantity": "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "V1Time": "io.k8s.apimachinery.pkg.apis.meta.v1.Time",
}
# Definitions of Kubernetes' core groups, searched in this order for a `V1<Name>`.
_KUBERNETES_GROUPS = ("io.k8s.api.core.v1", "io.k8s.apimachinery.pkg.apis.meta.v1", "io.k8s.api.apps.v1")


@dataclass(frozen=True)
class ApiType:
    """One generated SDK class: JSON field name -> the SDK's type string, and the required fields."""

    name: str
    fields: dict[str, str]
    required: frozenset[str]


@dataclass(frozen=True)
class Sdk:
    release: str
    licence: str
    types: dict[str, ApiType]


def sdk_wheel() -> Path | None:
    path = SDK_FOLDER / WHEEL_NAME
    return path if path.is_file() else None


def missing_reason() -> str:
    return (
        f"KServe's SDK {KSERVE_SDK_RELEASE} wheel is not at {SDK_FOLDER / WHEEL_NAME} (`make install` "
        "downloads it; RECAP_KSERVE_SDK names another folder): no check against KServe's API types"
    )


@functools.cache
def load_sdk(wheel: Path) -> Sdk:
    types: dict[str, ApiType] = {}
    with zipfile.ZipFile(wheel) as archive:
        metadata = HeaderParser().parsestr(
            archive.read(f"kserve-{KSERVE_SDK_RELEASE}.dist-info/METADATA").decode()
        )
        for member in archive.namelist():
            if member.startswith("kserve/models/") and member.endswith(".py"):
                for api_type in _classes(archive.read(member).decode()):
                    types[api_type.name] = api_type
    return Sdk(release=metadata["Version"], licence=metadata["License"], types=types)


def _classes(source: str) -> list[ApiType]:
    found = []
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        literals: dict[str, dict[str, str]] = {}
        for statement in node.body:
            if not isinstance(statement, ast.Assign):
                continue
            target = statement.targets[0]
            if isinstance(target, ast.Name) and target.id in ("openapi_types", "attribute_map"):
                literals[target.id] = ast.literal_eval(statement.value)
        if "openapi_types" not in literals:
            continue
        names = literals["attribute_map"]
        required = set(_REQUIRED.findall(ast.get_source_segment(source, node) or ""))
        found.append(
            ApiType(
                name=node.name,
                fields={names[attr]: kind for attr, kind in literals["openapi_types"].items()},
                required=frozenset(names[attr] for attr in required),
            )
        )
    return found


@functools.cache
def _kubernetes_definitions() -> tuple[Any, dict[str, Any]]:
    """(a jsonschema Registry holding kubernetes-validate's definitions, those definitions by name)."""
    import kubernetes_validate  # noqa: PLC0415  (dev dependency; the caller skips without it)
    from referencing import Registry, Resource  # noqa: PLC0415

    version = kubernetes_validate.latest_version()
    folder = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema" / f"v{version}-local-strict"
    document = json.loads((folder / "_definitions.json").read_text())
    registry = Registry().with_resource(document["$id"], Resource.from_contents(document))
    return registry, {"$id": document["$id"], **document["$defs"]}


def kubernetes_definition(sdk_name: str) -> str | None:
    """kubernetes-validate's definition for an SDK type name such as `V1Container`, or None."""
    _, definitions = _kubernetes_definitions()
    if sdk_name in _KUBERNETES_ALIASES:
        return _KUBERNETES_ALIASES[sdk_name]
    spelled = re.fullmatch(r"K8sIoApi([A-Z][a-z]+)(V\d\w*?)([A-Z]\w+)", sdk_name)
    if spelled:  # K8sIoApiAppsV1DeploymentStrategy -> io.k8s.api.apps.v1.DeploymentStrategy
        group, version, name = spelled.groups()
        candidate = f"io.k8s.api.{group.lower()}.{version.lower()}.{name}"
        return candidate if candidate in definitions else None
    core = re.fullmatch(r"V1([A-Z]\w+)", sdk_name)
    if core:
        for group in _KUBERNETES_GROUPS:
            if f"{group}.{core.group(1)}" in definitions:
                return f"{group}.{core.group(1)}"
    return None


def _kubernetes_problems(value: Any, definition: str, path: str) -> list[str]:
    import jsonschema  # noqa: PLC0415

    registry, definitions = _kubernetes_definitions()
    schema = {"$ref": f"{definitions['$id']}#/$defs/{definition}"}
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    return [
        f"{_join(path, *error.absolute_path)}: {error.message} (Kubernetes {definition})"
        for error in validator.iter_errors(value)
    ]


def _join(path: str, *steps: object) -> str:
    for step in steps:
        path = f"{path}[{step}]" if isinstance(step, int) else (f"{path}.{step}" if path else str(step))
    return path


_SCALARS: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "bool": (bool,),
    "float": (int, float),
    "datetime": (str,),
}


def problems(sdk: Sdk, value: Any, kind: str, path: str = "") -> list[str]:
    """Everything wrong with `value` as the SDK type string `kind`: unknown fields, wrong JSON types,
    missing required fields, at any depth."""
    where = path or "(top)"
    if kind in _SCALARS:
        ok = isinstance(value, _SCALARS[kind]) and not (kind in ("int", "float") and isinstance(value, bool))
        return [] if ok else [f"{where}: expected {kind}, got {type(value).__name__}"]
    if kind == "object":
        return []
    listed, mapped = _LIST.match(kind), _DICT.match(kind)
    if listed:
        if not isinstance(value, list):
            return [f"{where}: expected a list, got {type(value).__name__}"]
        return [
            p for index, item in enumerate(value) for p in problems(sdk, item, listed[1], f"{path}[{index}]")
        ]
    if mapped:
        if not isinstance(value, dict):
            return [f"{where}: expected a mapping, got {type(value).__name__}"]
        return [p for key, item in value.items() for p in problems(sdk, item, mapped[1], _join(path, key))]
    api_type = sdk.types.get(kind)
    if api_type is None:
        definition = kubernetes_definition(kind)
        if definition is None:  # a type from another project (Knative, KEDA): its shape only
            return [] if isinstance(value, dict) else [f"{where}: expected an object ({kind})"]
        return _kubernetes_problems(value, definition, path)
    if not isinstance(value, dict):
        return [f"{where}: expected an object ({kind}), got {type(value).__name__}"]
    found = [f"{_join(path, name)}: required by {kind}" for name in sorted(api_type.required - set(value))]
    for key, item in value.items():
        if key not in api_type.fields:
            found.append(f"{_join(path, key)}: unknown field")
        elif item is not None:
            found += problems(sdk, item, api_type.fields[key], _join(path, key))
    return found


def object_problems(sdk: Sdk, obj: dict[str, Any]) -> list[str]:
    """Everything wrong with a KServe object by the SDK's types of its kind."""
    kind = KINDS.get((obj.get("apiVersion", ""), obj.get("kind", "")))
    if kind is None:
        return [f"KServe {sdk.release} has no type for {obj.get('apiVersion')} {obj.get('kind')}"]
    return problems(sdk, obj, kind)

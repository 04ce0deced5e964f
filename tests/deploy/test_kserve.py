"""deploy/kserve: every KServe object validates against the CRD schemas of a KServe release (plus a check
that no field is unknown to them, which the CRD schemas themselves do not make), the other objects
against Kubernetes' schemas, and the runtime follows KServe's conventions (kserve-container on 8080, V2,
onnx, metrics annotations) with settings the server accepts.

The project commits no files copied from other repositories, so KServe's CRDs are not in it: point
RECAP_KSERVE_CRDS at a folder holding `serving.kserve.io_servingruntimes.yaml` and
`serving.kserve.io_inferenceservices.yaml` from KServe's `config/crd/full/` (written against v0.20.0).
Without it the schema checks skip and say so; the convention checks always run."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy.test_k8s import (
    cpus,
    downward_cpu_limit,
    env_of,
    image_uid,
    load_documents,
    only_digests,
    unknown_settings,
    validated_settings,
)
from tests.helpers.servers import REPO

KSERVE = REPO / "deploy" / "kserve"
CRDS = Path(os.environ.get("RECAP_KSERVE_CRDS", "/nonexistent"))
CRD_FILES = ("serving.kserve.io_servingruntimes.yaml", "serving.kserve.io_inferenceservices.yaml")
KSERVE_GROUP = "serving.kserve.io"
RELEASE = "v0.20.0"


@functools.cache
def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, kind) -> openAPIV3Schema of every served version of KServe's CRDs."""
    if not all((CRDS / name).is_file() for name in CRD_FILES):
        pytest.skip(
            "KServe's CRDs are not here (the project commits no third-party files): set RECAP_KSERVE_CRDS to "
            f"a folder with {' and '.join(CRD_FILES)} from KServe {RELEASE}'s config/crd/full"
        )
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for name in CRD_FILES:
        [crd] = load_documents(CRDS / name)
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if version["served"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Keys of `value` that `schema` does not know, wherever it lists properties and neither preserves
    unknown fields nor allows additional properties: what the API server prunes silently."""
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            where = f"{path}.{key}" if path else key
            if properties is not None and key in properties:
                found += unknown_fields(item, properties[key], where)
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, where)
            elif (
                properties is not None
                and extra is None
                and not schema.get("x-kubernetes-preserve-unknown-fields", False)
            ):
                found.append(where)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def crd_problems(obj: dict[str, Any]) -> list[str]:
    """Everything wrong with a KServe object by its CRD: schema errors, then unknown fields."""
    schema = crd_schemas().get((obj["apiVersion"], obj["kind"]))
    if schema is None:
        return [f"no CRD in RECAP_KSERVE_CRDS serves {obj['apiVersion']} {obj['kind']}"]
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is not installed (a dev dependency): no CRD schema check"
    )
    validator = jsonschema.Draft7Validator(schema)
    problems = [
        f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(obj)
    ]
    return problems + [f"{where}: unknown field" for where in unknown_fields(obj, schema)]


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KSERVE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [(path.name, doc) for doc in load_documents(path)]
    return found


DOCUMENTS = _documents()


def the(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind]
    assert len(found) == 1, f"expected one {kind} in deploy/kserve, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    return the("ServingRuntime")


@pytest.fixture(scope="module")
def container(runtime: dict[str, Any]) -> dict[str, Any]:
    [found] = runtime["spec"]["containers"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return the("InferenceService")


def env_values(container: dict[str, Any]) -> dict[str, str]:
    return {name: item["value"] for name, item in env_of(container).items() if "value" in item}


# -- KServe's CRDs and the validation -----------------------------------------------------------------


def test_the_crds_are_the_two_kinds_used() -> None:
    assert {kind for _, kind in crd_schemas()} == {"ServingRuntime", "InferenceService"}


@pytest.mark.parametrize(("name", "obj"), DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in DOCUMENTS])
def test_every_object_validates(name: str, obj: dict[str, Any]) -> None:
    if obj["apiVersion"].split("/")[0] == KSERVE_GROUP:
        assert crd_problems(obj) == [], f"{name} against KServe {RELEASE}"
        return
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (a dev dependency): no Kubernetes schema check",
    )
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_object() -> None:
    [kustomization] = load_documents(KSERVE / "kustomization.yaml")
    files = {path.name for path in KSERVE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (system package kubectl; `make system-deps`): cannot render")
    done = subprocess.run(
        [kubectl, "kustomize", str(KSERVE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert sorted(rendered, key=str) == sorted((doc for _, doc in DOCUMENTS), key=str)


@pytest.mark.parametrize(
    ("kind", "path", "wrong"),
    [
        ("ServingRuntime", ["spec", "containers", 0], "readinesProbe"),
        ("ServingRuntime", ["spec"], "supportedModelFormat"),
        ("ServingRuntime", ["spec", "supportedModelFormats", 0], "autoselect"),
        ("InferenceService", ["spec", "predictor", "model"], "storageURI"),
        ("InferenceService", ["spec", "predictor"], "minReplica"),
    ],
)
def test_a_misspelled_field_is_caught(kind: str, path: list[str | int], wrong: str) -> None:
    obj = copy.deepcopy(the(kind))
    holder: Any = obj
    for step in path:
        holder = holder[step]
    holder[wrong] = holder.get(wrong, "x")
    assert crd_problems(the(kind)) == []
    where = ".".join(str(step) for step in path).replace(".0", "[0]")
    assert f"{where}.{wrong}: unknown field" in crd_problems(obj)


def test_a_wrong_type_is_caught(runtime: dict[str, Any]) -> None:
    obj = copy.deepcopy(runtime)
    obj["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert any("containerPort" in problem for problem in crd_problems(obj))
    obj = copy.deepcopy(runtime)
    del obj["spec"]["containers"]
    assert any("'containers' is a required property" in problem for problem in crd_problems(obj))


# -- KServe's conventions and the server's settings -------------------------------------------------------


def test_runtime_follows_kserve_conventions(runtime: dict[str, Any], container: dict[str, Any]) -> None:
    spec = runtime["spec"]
    assert container["name"] == "kserve-container"
    assert "v2" in spec["protocolVersions"]
    assert {"name": "onnx", "version": "1", "autoSelect": True} in spec["supportedModelFormats"]
    env = env_values(container)
    assert env["RECAP_PORT"] == "8080"
    # Knative: a single port, named http1 or h2c.
    assert [(port["containerPort"], port["name"]) for port in container["ports"]] == [(8080, "http1")]
    assert env["RECAP_MODEL_REPOSITORY"] == "/mnt/models", "where KServe puts the storageUri's files"


def test_probes(container: dict[str, Any]) -> None:
    expected = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": 8080}, "Knative: the container port"
    assert "lifecycle" not in container, "Knative rejects lifecycle hooks"


def test_metrics_annotations_point_at_the_metrics_port(
    runtime: dict[str, Any], container: dict[str, Any]
) -> None:
    annotations = runtime["spec"]["annotations"]
    env = env_values(container)
    assert annotations["prometheus.kserve.io/port"] == env["RECAP_METRICS_PORT"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert env["RECAP_METRICS_PORT"] != env["RECAP_PORT"]


def test_inference_service_uses_the_runtime(runtime: dict[str, Any], isvc: dict[str, Any]) -> None:
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == "onnx"
    assert model.get("protocolVersion", "v2") in runtime["spec"]["protocolVersions"]
    assert model["storageUri"].split("://")[0] in ("pvc", "s3", "gs", "https", "hdfs", "oci")
    assert predictor["minReplicas"] == 0, "scale to zero"
    annotations = isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("Knative", "Serverless")
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"


def test_recap_variables_are_settings_fields(container: dict[str, Any], isvc: dict[str, Any]) -> None:
    names = list(env_of(container)) + list(env_of(isvc["spec"]["predictor"]["model"]))
    assert unknown_settings([name for name in names if name.startswith("RECAP_")]) == []


def test_workers_match_the_cpu_limit(container: dict[str, Any]) -> None:
    limits = container["resources"]["limits"]
    assert int(env_values(container)["RECAP_WORKERS"]) == downward_cpu_limit(limits["cpu"])
    assert cpus(container["resources"]["requests"]["cpu"]) <= cpus(limits["cpu"])


def test_keys_secret_mounted_as_a_directory(runtime: dict[str, Any], container: dict[str, Any]) -> None:
    secret = the("Secret")
    [volume] = [
        v
        for v in runtime["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    [mount] = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    assert "subPath" not in mount and "subPathExpr" not in mount and "items" not in volume["secret"]
    keys_file = PurePosixPath(env_values(container)["RECAP_API_KEYS_FILE"])
    assert keys_file.parent == PurePosixPath(mount["mountPath"])
    assert keys_file.name in secret["stringData"]
    assert only_digests(secret["stringData"][keys_file.name]) == []
    assert "RECAP_ALLOW_UNAUTHENTICATED" not in env_values(container)


def test_security_context(container: dict[str, Any]) -> None:
    context = container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == image_uid()
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_server_accepts_the_settings(
    container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_values(container)
    chosen = validated_settings(env, the("Secret")["stringData"]["api-keys"], tmp_path, monkeypatch)
    assert (chosen.host, chosen.port, chosen.metrics_port) == ("0.0.0.0", 8080, 8002)
    assert chosen.worker_count == 2

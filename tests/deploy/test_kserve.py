"""deploy/kserve: every KServe object validates against KServe's schemas (plus a check that no field is
unknown to them, which the CRD schemas themselves do not make), the other objects against Kubernetes'
schemas, and the two runtimes follow KServe's conventions (kserve-container, onnx, metrics annotations;
recap-serve: REST on http1 8080, recap-serve-grpc: grpc-v2 on one h2c port, which its probes use) with
settings the server accepts.

KServe's schemas come from two places, each check run where its source is at hand:
- `sdk`: KServe's API types from its Python SDK, release `kserve_types.KSERVE_SDK_RELEASE` (Apache-2.0),
  whose wheel `make install` downloads from PyPI (see kserve_types.py). Runs in CI.
- `crd`: KServe's CRDs. The project commits no files copied from other repositories, and no package
  registry ships them, so point RECAP_KSERVE_CRDS at a folder holding `serving.kserve.io_servingruntimes.yaml`
  and `serving.kserve.io_inferenceservices.yaml` from KServe's `config/crd/full/` (written against v0.20.0).
Without its source a check skips and says so; the convention checks always run."""

from __future__ import annotations

import copy
import functools
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from tests.deploy import kserve_types
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
# Objects kept out of kustomization.yaml on purpose (see their comments); validated all the same.
EXAMPLES = ("inferenceservice-grpc.yaml",)
HTTP_RUNTIME, GRPC_RUNTIME = "recap-serve", "recap-serve-grpc"
RUNTIMES = (HTTP_RUNTIME, GRPC_RUNTIME)
# Each runtime's example InferenceService.
ISVC_OF = {HTTP_RUNTIME: "recap-zoo", GRPC_RUNTIME: "recap-zoo-grpc"}


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


def the(kind: str, name: str | None = None) -> dict[str, Any]:
    """The one object of a kind in deploy/kserve, or the one of that kind with that name."""
    found = [doc for _, doc in DOCUMENTS if doc["kind"] == kind and name in (None, doc["metadata"]["name"])]
    named = kind if name is None else f"{kind} {name}"
    assert len(found) == 1, f"expected one {named} in deploy/kserve, found {len(found)}"
    return found[0]


def the_container(runtime: dict[str, Any]) -> dict[str, Any]:
    [found] = runtime["spec"]["containers"]
    assert isinstance(found, dict)
    return found


@pytest.fixture(scope="module")
def runtime() -> dict[str, Any]:
    """The REST runtime."""
    return the("ServingRuntime", HTTP_RUNTIME)


@pytest.fixture(scope="module")
def container(runtime: dict[str, Any]) -> dict[str, Any]:
    return the_container(runtime)


@pytest.fixture(scope="module")
def isvc() -> dict[str, Any]:
    return the("InferenceService", ISVC_OF[HTTP_RUNTIME])


@pytest.fixture(scope="module")
def grpc_runtime() -> dict[str, Any]:
    return the("ServingRuntime", GRPC_RUNTIME)


@pytest.fixture(scope="module")
def grpc_container(grpc_runtime: dict[str, Any]) -> dict[str, Any]:
    return the_container(grpc_runtime)


@pytest.fixture(scope="module", params=RUNTIMES)
def each_runtime(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Each runtime in turn, for what both must get right."""
    return the("ServingRuntime", request.param)


@pytest.fixture(scope="module")
def each_container(each_runtime: dict[str, Any]) -> dict[str, Any]:
    return the_container(each_runtime)


@pytest.fixture(scope="module")
def each_isvc(each_runtime: dict[str, Any]) -> dict[str, Any]:
    return the("InferenceService", ISVC_OF[each_runtime["metadata"]["name"]])


def env_values(container: dict[str, Any]) -> dict[str, str]:
    return {name: item["value"] for name, item in env_of(container).items() if "value" in item}


# -- KServe's CRDs and the validation -----------------------------------------------------------------


def test_the_crds_are_the_two_kinds_used() -> None:
    assert {kind for _, kind in crd_schemas()} == {"ServingRuntime", "InferenceService"}


def sdk_problems(obj: dict[str, Any]) -> list[str]:
    """Everything wrong with a KServe object by the SDK's API types of KServe's release."""
    wheel = kserve_types.sdk_wheel()
    if wheel is None:
        pytest.skip(kserve_types.missing_reason())
    pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is not installed (a dev dependency)"
    )
    return kserve_types.object_problems(kserve_types.load_sdk(wheel), obj)


SCHEMA_CHECKS = {"sdk": sdk_problems, "crd": crd_problems}
Check = Callable[[dict[str, Any]], list[str]]


@pytest.fixture(params=sorted(SCHEMA_CHECKS))
def kserve_check(request: pytest.FixtureRequest) -> Check:
    """Each source of KServe's schemas in turn (each skips without its files)."""
    return SCHEMA_CHECKS[request.param]


def test_the_sdk_is_the_named_release_under_its_licence() -> None:
    wheel = kserve_types.sdk_wheel()
    if wheel is None:
        pytest.skip(kserve_types.missing_reason())
    sdk = kserve_types.load_sdk(wheel)
    assert (sdk.release, sdk.licence) == (kserve_types.KSERVE_SDK_RELEASE, "Apache-2.0")
    makefile = (REPO / "Makefile").read_text()
    assert f"KSERVE_SDK := {kserve_types.KSERVE_SDK_RELEASE}" in makefile, "one pinned release"
    assert f"v{sdk.release}" in (KSERVE / "README.md").read_text(), "the README names the release"
    for name in kserve_types.KINDS.values():
        assert name in sdk.types
    # Every Kubernetes type the two kinds use resolves to a Kubernetes schema (none checked as "any").
    used = {"V1Container", "V1ObjectMeta", "V1Probe", "V1ResourceRequirements", "V1SecurityContext"}
    assert all(kserve_types.kubernetes_definition(name) for name in used)


KSERVE_DOCUMENTS = [(n, d) for n, d in DOCUMENTS if d["apiVersion"].split("/")[0] == KSERVE_GROUP]
OTHER_DOCUMENTS = [(n, d) for n, d in DOCUMENTS if (n, d) not in KSERVE_DOCUMENTS]


@pytest.mark.parametrize(
    ("name", "obj"), KSERVE_DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in KSERVE_DOCUMENTS]
)
def test_every_kserve_object_validates(name: str, obj: dict[str, Any], kserve_check: Check) -> None:
    assert kserve_check(obj) == [], name


@pytest.mark.parametrize(
    ("name", "obj"), OTHER_DOCUMENTS, ids=[f"{n}:{d['kind']}" for n, d in OTHER_DOCUMENTS]
)
def test_every_other_object_validates(name: str, obj: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (a dev dependency): no Kubernetes schema check",
    )
    kubernetes_validate.validate(obj, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_object() -> None:
    [kustomization] = load_documents(KSERVE / "kustomization.yaml")
    files = {path.name for path in KSERVE.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(EXAMPLES) <= files
    assert set(kustomization["resources"]) == files - set(EXAMPLES)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (system package kubectl; `make system-deps`): cannot render")
    done = subprocess.run(
        [kubectl, "kustomize", str(KSERVE)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    rendered = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    listed = (doc for name, doc in DOCUMENTS if name not in EXAMPLES)
    assert sorted(rendered, key=str) == sorted(listed, key=str)


def test_the_runtimes_and_their_inference_services() -> None:
    runtimes = sorted(doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "ServingRuntime")
    assert runtimes == sorted(RUNTIMES)
    services = sorted(doc["metadata"]["name"] for _, doc in DOCUMENTS if doc["kind"] == "InferenceService")
    assert services == sorted(ISVC_OF.values())


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
def test_a_misspelled_field_is_caught(
    kind: str, path: list[str | int], wrong: str, kserve_check: Check
) -> None:
    name = HTTP_RUNTIME if kind == "ServingRuntime" else ISVC_OF[HTTP_RUNTIME]
    obj = copy.deepcopy(the(kind, name))
    holder: Any = obj
    for step in path:
        holder = holder[step]
    holder[wrong] = holder.get(wrong, "x")
    assert kserve_check(the(kind, name)) == []
    where = ".".join(str(step) for step in path).replace(".0", "[0]")
    # Either "<where>.<wrong>: unknown field", or Kubernetes' "<where>: ... ('<wrong>' was unexpected)".
    assert any(problem.startswith(where) and wrong in problem for problem in kserve_check(obj)), where


def test_a_wrong_type_is_caught(
    runtime: dict[str, Any], grpc_runtime: dict[str, Any], kserve_check: Check
) -> None:
    obj = copy.deepcopy(runtime)
    obj["spec"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    assert any("containerPort" in problem for problem in kserve_check(obj))
    obj = copy.deepcopy(grpc_runtime)
    obj["spec"]["containers"][0]["readinessProbe"]["grpc"]["port"] = "h2c"  # a number, not a name
    assert any("grpc.port" in problem for problem in kserve_check(obj))
    obj = copy.deepcopy(runtime)
    del obj["spec"]["containers"]
    assert any("containers" in problem and "required" in problem for problem in kserve_check(obj))


# -- KServe's conventions and the server's settings -------------------------------------------------------


def test_runtimes_follow_kserve_conventions(
    each_runtime: dict[str, Any], each_container: dict[str, Any]
) -> None:
    spec = each_runtime["spec"]
    assert each_container["name"] == "kserve-container"
    assert {"name": "onnx", "version": "1", "autoSelect": True} in spec["supportedModelFormats"]
    env = env_values(each_container)
    assert env["RECAP_PORT"] == "8080"
    assert env["RECAP_MODEL_REPOSITORY"] == "/mnt/models", "where KServe puts the storageUri's files"
    # Knative: a single port, named http1 or h2c.
    assert len(each_container["ports"]) == 1
    assert each_container["ports"][0]["name"] in ("http1", "h2c")
    assert each_container["ports"][0].get("protocol", "TCP") == "TCP"
    assert "lifecycle" not in each_container, "Knative rejects lifecycle hooks"


def test_http_runtime_serves_rest_on_8080(runtime: dict[str, Any], container: dict[str, Any]) -> None:
    assert runtime["spec"]["protocolVersions"] == ["v2"]
    assert [(port["containerPort"], port["name"]) for port in container["ports"]] == [(8080, "http1")]
    # No gRPC listener where nothing routes to it: gRPC is the other runtime's.
    assert env_values(container)["RECAP_GRPC_PORT"] == "0"


def test_grpc_runtime_serves_grpc_on_its_one_h2c_port(
    grpc_runtime: dict[str, Any], grpc_container: dict[str, Any]
) -> None:
    assert grpc_runtime["spec"]["protocolVersions"] == ["grpc-v2"]
    [port] = grpc_container["ports"]
    assert port["name"] == "h2c", "Knative: HTTP/2 cleartext to the container, as gRPC needs"
    env = env_values(grpc_container)
    assert port["containerPort"] == int(env["RECAP_GRPC_PORT"])
    assert port["containerPort"] not in (int(env["RECAP_PORT"]), int(env["RECAP_METRICS_PORT"]))


def test_the_protocols_pick_one_runtime(runtime: dict[str, Any], grpc_runtime: dict[str, Any]) -> None:
    """Both auto-select onnx: an InferenceService's protocolVersion must match one of them only."""
    assert not set(runtime["spec"]["protocolVersions"]) & set(grpc_runtime["spec"]["protocolVersions"])


def test_the_runtimes_are_the_same_server(container: dict[str, Any], grpc_container: dict[str, Any]) -> None:
    """The gRPC runtime differs in its port, its probes and RECAP_GRPC_PORT only."""
    differ = {"ports", "startupProbe", "readinessProbe", "livenessProbe", "env"}
    assert {key: value for key, value in container.items() if key not in differ} == {
        key: value for key, value in grpc_container.items() if key not in differ
    }
    http, grpc = env_values(container), env_values(grpc_container)
    assert {name for name in {*http, *grpc} if http.get(name) != grpc.get(name)} == {"RECAP_GRPC_PORT"}


def test_probes(container: dict[str, Any]) -> None:
    expected = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        assert container[probe]["httpGet"] == {"path": path, "port": 8080}, "Knative: the container port"
    assert "lifecycle" not in container, "Knative rejects lifecycle hooks"


def test_grpc_probes_on_the_h2c_port(grpc_container: dict[str, Any]) -> None:
    """Knative probes the declared port only: grpc.health.v1 (which follows readiness) there for startup
    and readiness, and a TCP connect for liveness (a model that is not ready is no reason to restart)."""
    [port] = grpc_container["ports"]
    h2c = port["containerPort"]
    for probe in ("startupProbe", "readinessProbe"):
        # No service name: the server's overall status, SERVING exactly when /v2/health/ready is 200.
        assert grpc_container[probe]["grpc"] == {"port": h2c}, probe
    assert grpc_container["livenessProbe"]["tcpSocket"] == {"port": h2c}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in grpc_container[probe], f"{probe}: 8080 is not the declared port"
    startup = grpc_container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "models get a minute to load"


def test_metrics_annotations_point_at_the_metrics_port(
    each_runtime: dict[str, Any], each_container: dict[str, Any]
) -> None:
    annotations = each_runtime["spec"]["annotations"]
    env = env_values(each_container)
    assert annotations["prometheus.kserve.io/port"] == env["RECAP_METRICS_PORT"]
    assert annotations["prometheus.kserve.io/path"] == "/metrics"
    assert env["RECAP_METRICS_PORT"] != env["RECAP_PORT"]


def test_inference_service_uses_the_runtime(each_runtime: dict[str, Any], each_isvc: dict[str, Any]) -> None:
    predictor = each_isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["runtime"] == each_runtime["metadata"]["name"]
    assert model["modelFormat"]["name"] == "onnx"
    assert model.get("protocolVersion", "v2") in each_runtime["spec"]["protocolVersions"]
    assert model["storageUri"].split("://")[0] in ("pvc", "s3", "gs", "https", "hdfs", "oci")
    assert predictor["minReplicas"] == 0, "scale to zero"
    annotations = each_isvc["metadata"]["annotations"]
    assert annotations["serving.kserve.io/deploymentMode"] in ("Knative", "Serverless")
    assert annotations["serving.kserve.io/enable-metric-aggregation"] == "true"


def test_grpc_inference_service_asks_for_grpc(grpc_runtime: dict[str, Any]) -> None:
    model = the("InferenceService", ISVC_OF[GRPC_RUNTIME])["spec"]["predictor"]["model"]
    assert (model["runtime"], model["protocolVersion"]) == (GRPC_RUNTIME, "grpc-v2")
    assert (
        model["storageUri"]
        == the("InferenceService", ISVC_OF[HTTP_RUNTIME])["spec"]["predictor"]["model"]["storageUri"]
    ), "the same repository as the REST example"


def test_recap_variables_are_settings_fields(
    each_container: dict[str, Any], each_isvc: dict[str, Any]
) -> None:
    names = list(env_of(each_container)) + list(env_of(each_isvc["spec"]["predictor"]["model"]))
    recap = [name for name in names if name.startswith("RECAP_")]
    assert "RECAP_GRPC_PORT" in recap
    assert unknown_settings(recap) == []


def test_workers_match_the_cpu_limit(each_container: dict[str, Any]) -> None:
    limits = each_container["resources"]["limits"]
    assert int(env_values(each_container)["RECAP_WORKERS"]) == downward_cpu_limit(limits["cpu"])
    assert cpus(each_container["resources"]["requests"]["cpu"]) <= cpus(limits["cpu"])


def test_keys_secret_mounted_as_a_directory(
    each_runtime: dict[str, Any], each_container: dict[str, Any]
) -> None:
    secret = the("Secret")
    [volume] = [
        v
        for v in each_runtime["spec"]["volumes"]
        if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    [mount] = [mount for mount in each_container["volumeMounts"] if mount["name"] == volume["name"]]
    assert "subPath" not in mount and "subPathExpr" not in mount and "items" not in volume["secret"]
    keys_file = PurePosixPath(env_values(each_container)["RECAP_API_KEYS_FILE"])
    assert keys_file.parent == PurePosixPath(mount["mountPath"])
    assert keys_file.name in secret["stringData"]
    assert only_digests(secret["stringData"][keys_file.name]) == []
    assert "RECAP_ALLOW_UNAUTHENTICATED" not in env_values(each_container)


def test_security_context(each_container: dict[str, Any]) -> None:
    context = each_container["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] == image_uid()
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}


def test_the_server_accepts_the_settings(
    each_container: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = env_values(each_container)
    chosen = validated_settings(env, the("Secret")["stringData"]["api-keys"], tmp_path, monkeypatch)
    assert (chosen.host, chosen.port, chosen.metrics_port) == ("0.0.0.0", 8080, 8002)
    assert chosen.worker_count == 2
    [port] = each_container["ports"]
    # The declared port is the one KServe routes to: HTTP's, or gRPC's on h2c (0: no gRPC listener).
    expected_grpc = port["containerPort"] if port["name"] == "h2c" else 0
    assert chosen.grpc_port == expected_grpc

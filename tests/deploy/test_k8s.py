"""deploy/k8s: kustomize renders it, every object passes Kubernetes' own schemas (strict: no unknown field),
and the Deployment has what a production rollout needs (probes, security context, a drain that fits the
grace period, rotatable keys, workers from the CPU limit, scraping on the metrics port, the gRPC port
declared on the container, the Service and the NetworkPolicy).

Without kubectl the property checks read the files the kustomization lists (it only adds a label); the
schema checks need the kubernetes-validate package. Both skip, saying so, where they are missing.
"""

from __future__ import annotations

import copy
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from service.keys import parse_keys
from service.settings import Settings
from tests.helpers.servers import REPO

K8S = REPO / "deploy" / "k8s"
# Kubernetes objects kept out of kustomization.yaml on purpose (see their comments); validated all the same.
EXAMPLES = ("hpa-requests-example.yaml", "prometheus-adapter-rule.yaml")
DOCKERFILE = REPO / "docker" / "service.Dockerfile"
PART_OF = ("app.kubernetes.io/part-of", "recap-serve")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# -- helpers, shared with test_kserve.py ------------------------------------------------------------------


def load_documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_LOADER) if doc]


def field_of(env_name: str) -> str | None:
    """The Settings field an environment variable sets: RECAP_X_Y -> x_y (None: not a RECAP_ name)."""
    if not env_name.startswith("RECAP_"):
        return None
    return env_name.removeprefix("RECAP_").lower()


def unknown_settings(names: list[str]) -> list[str]:
    return [name for name in names if field_of(name) not in Settings.model_fields]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def cpus(quantity: str | int | float) -> float:
    """A Kubernetes CPU quantity ("2", "1500m", 0.5) in CPUs."""
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


def downward_cpu_limit(quantity: str | int | float, divisor: str | int = "1") -> int:
    """What the downward API gives for limits.cpu: the limit over the divisor, rounded up."""
    return math.ceil(cpus(quantity) / cpus(divisor))


def image_uid() -> int:
    users = re.findall(r"^USER\s+(\d+)", DOCKERFILE.read_text(), flags=re.MULTILINE)
    assert users, f"{DOCKERFILE.name}: no numeric USER"
    return int(users[-1])


def validated_settings(
    env: dict[str, str], keys_text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The server's own validation of these RECAP_ variables, read from the environment as
    `python -m service` reads them, with the model repository and the keys file (paths in the cluster)
    replaced by local stand-ins."""
    for name in [name for name in os.environ if name.startswith("RECAP_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        if name.startswith("RECAP_"):
            monkeypatch.setenv(name, value)
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    monkeypatch.setenv("RECAP_MODEL_REPOSITORY", str(models))
    if "RECAP_API_KEYS_FILE" in env:
        keys = tmp_path / "api-keys"
        keys.write_text(keys_text)
        monkeypatch.setenv("RECAP_API_KEYS_FILE", str(keys))
    return Settings()


def only_digests(keys_text: str) -> list[str]:
    """Problems with a keys file committed to the repository: it must parse, and hold digests only."""
    problems = []
    parse_keys(keys_text)  # raises on a malformed line
    for number, raw in enumerate(keys_text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split()
        if line and not line[1].startswith("sha256:"):
            problems.append(f"line {number} holds a key, not a sha256: digest")
    return problems


# -- the objects ------------------------------------------------------------------------------------------


def _kustomization_resources() -> list[str]:
    listed: list[str] = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    return listed


def _raw_objects() -> list[dict[str, Any]]:
    return [doc for name in _kustomization_resources() for doc in load_documents(K8S / name)]


def _kustomize() -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (system package kubectl; `make system-deps`): cannot render")
    done = subprocess.run(
        [kubectl, "kustomize", str(K8S)], check=False, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    """The rendered objects, or those of the listed files where kubectl is missing."""
    return _kustomize() if shutil.which("kubectl") else _raw_objects()


def one(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return one(objects, "Deployment")


@pytest.fixture(scope="module")
def pod(deployment: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = deployment["spec"]["template"]["spec"]
    return spec


@pytest.fixture(scope="module")
def container(pod: dict[str, Any]) -> dict[str, Any]:
    assert len(pod["containers"]) == 1
    found: dict[str, Any] = pod["containers"][0]
    return found


@pytest.fixture(scope="module")
def settings(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The ConfigMap the container takes its environment from."""
    names = [source["configMapRef"]["name"] for source in container.get("envFrom", [])]
    assert len(names) == 1, "one ConfigMap in envFrom"
    config = [obj for obj in objects if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == names[0]]
    assert config, f"envFrom names ConfigMap {names[0]}, which is not deployed"
    data: dict[str, str] = config[0]["data"]
    return data


def setting(settings: dict[str, str], field: str) -> Any:
    """A setting's value in the ConfigMap, or the server's default."""
    name = "RECAP_" + field.upper()
    return settings[name] if name in settings else Settings.model_fields[field].default


def named_port(container: dict[str, Any], name: str) -> int:
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert name in ports, f"no container port named {name}"
    return int(ports[name])


# -- rendering and schemas --------------------------------------------------------------------------------


def test_kustomize_renders_every_listed_object() -> None:
    rendered = _kustomize()
    key = [(obj["kind"], obj["metadata"]["name"]) for obj in rendered]
    assert sorted(key) == sorted((obj["kind"], obj["metadata"]["name"]) for obj in _raw_objects())
    assert len(set(key)) == len(key), "two objects of one kind share a name"
    for obj in rendered:
        assert obj["metadata"]["labels"][PART_OF[0]] == PART_OF[1], obj["metadata"]["name"]
    for example in EXAMPLES:
        assert example not in _kustomization_resources()


def _schema_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    for name in _kustomization_resources():
        for doc in load_documents(K8S / name):
            yield f"{name}:{doc['kind']}", doc
    for name in EXAMPLES:
        for doc in load_documents(K8S / name):
            yield f"{name}:{doc['kind']}", doc


@pytest.fixture(scope="module")
def kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (a dev dependency): no Kubernetes schema checks",
    )


def test_every_object_passes_the_strict_kubernetes_schema(
    kubernetes_validate: Any, objects: list[dict[str, Any]]
) -> None:
    version = kubernetes_validate.latest_version()
    examples = [doc for name in EXAMPLES for doc in load_documents(K8S / name)]
    assert examples, "the examples hold Kubernetes objects"
    for obj in [*objects, *examples]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            pytest.fail(
                f"{obj['kind']}/{obj['metadata']['name']}: {path}: {exc.message} (Kubernetes {version})"
            )


def test_strict_schema_catches_a_misspelled_field(
    kubernetes_validate: Any, deployment: dict[str, Any]
) -> None:
    wrong = copy.deepcopy(deployment)
    wrong["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 5}
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        kubernetes_validate.validate(wrong, kubernetes_validate.latest_version(), strict=True)


# -- the properties ---------------------------------------------------------------------------------------


def test_recap_variables_are_settings_fields(
    objects: list[dict[str, Any]], container: dict[str, Any], settings: dict[str, str]
) -> None:
    names = [*settings, *env_of(container)]
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            names += list(obj.get("data", {}))
    recap = [name for name in names if name.startswith("RECAP_")]
    assert recap
    assert unknown_settings(recap) == []
    assert [name for name in settings if not name.startswith("RECAP_")] == []


def test_the_server_accepts_the_settings(
    objects: list[dict[str, Any]],
    container: dict[str, Any],
    settings: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = dict(settings)
    for name, item in env_of(container).items():
        if "value" in item:
            env[name] = item["value"]
    env["RECAP_WORKERS"] = str(downward_cpu_limit(container["resources"]["limits"]["cpu"]))
    secret = one(objects, "Secret")
    keys_text = next(iter(secret.get("stringData", {}).values()), "")
    chosen = validated_settings(env, keys_text, tmp_path, monkeypatch)
    assert chosen.host == "0.0.0.0"
    assert chosen.metrics_port is not None
    assert chosen.grpc_port == named_port(container, "grpc"), "the gRPC listener is the declared port"
    assert chosen.api_keys_file is not None, "a non-loopback server needs its keys file"
    assert not chosen.allow_unauthenticated


def test_probes(container: dict[str, Any], settings: dict[str, str]) -> None:
    http = named_port(container, "http")
    assert http == int(setting(settings, "port"))
    expected = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert get["port"] in ("http", http), f"{probe} is not on the API port"
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60, "models get a minute to load"


def test_only_the_ports_that_exist(container: dict[str, Any], settings: dict[str, str]) -> None:
    """The HTTP API, the gRPC API and the metrics listener, each where the ConfigMap puts it."""
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert "RECAP_GRPC_PORT" in settings, "the gRPC port is set, not left to the server's default"
    assert ports == {
        "http": int(setting(settings, "port")),
        "grpc": int(setting(settings, "grpc_port")),
        "metrics": int(setting(settings, "metrics_port")),
    }
    assert all(port.get("protocol", "TCP") == "TCP" for port in container["ports"])


def test_service_publishes_the_grpc_port(
    objects: list[dict[str, Any]], container: dict[str, Any], settings: dict[str, str]
) -> None:
    grpc = named_port(container, "grpc")
    assert grpc == int(setting(settings, "grpc_port")) > 0
    ports = {port["name"]: port for port in one(objects, "Service")["spec"]["ports"]}
    assert ports["grpc"]["port"] == grpc
    assert ports["grpc"]["targetPort"] in ("grpc", grpc)
    assert ports["grpc"]["appProtocol"] in ("grpc", "kubernetes.io/h2c"), "HTTP/2, for meshes and gateways"
    assert ports["http"]["appProtocol"] == "http"


def test_security_context(pod: dict[str, Any], container: dict[str, Any]) -> None:
    own = container["securityContext"]
    shared = pod.get("securityContext", {})

    def effective(field: str) -> Any:
        return own.get(field, shared.get(field))

    assert effective("runAsNonRoot") is True
    assert effective("runAsUser") == image_uid(), "the image's USER"
    assert effective("seccompProfile") == {"type": "RuntimeDefault"}
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"]
    assert not own["capabilities"].get("add")
    assert own.get("privileged", False) is False
    # A read-only root needs a writable /tmp: the workers' prometheus multiprocess files.
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert tmp, "no volume on /tmp"
    assert "emptyDir" in volumes[tmp[0]["name"]]
    assert not tmp[0].get("readOnly", False)


def _sleep_seconds(command: list[str]) -> float:
    """How long a preStop exec command sleeps: `sleep N` or python's time.sleep(N)."""
    if PurePosixPath(command[0]).name == "sleep":
        return float(command[1])
    found = re.fullmatch(r"import time; ?time\.sleep\((\d+(?:\.\d+)?)\)", command[-1])
    assert PurePosixPath(command[0]).name.startswith("python") and command[1] == "-c" and found, command
    return float(found.group(1))


def test_grace_period_covers_prestop_drain_and_shutdown(
    pod: dict[str, Any], container: dict[str, Any], settings: dict[str, str]
) -> None:
    pre_stop = _sleep_seconds(container["lifecycle"]["preStop"]["exec"]["command"])
    drain = float(setting(settings, "drain_grace_seconds"))
    shutdown = float(setting(settings, "shutdown_timeout_seconds"))
    assert pre_stop > 0, "a preStop sleep: the endpoint removal reaches the proxies first"
    assert drain > 0, "RECAP_DRAIN_GRACE_SECONDS: readiness 503 while requests are still accepted"
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + shutdown, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop {pre_stop} "
        f"+ drain grace {drain} + shutdown timeout {shutdown}"
    )


def test_keys_secret_mounted_as_a_directory(
    objects: list[dict[str, Any]], pod: dict[str, Any], container: dict[str, Any]
) -> None:
    secret = one(objects, "Secret")
    volumes = [
        v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    assert len(volumes) == 1, "the keys Secret is a volume"
    assert "items" not in volumes[0]["secret"], "the whole Secret, so a new key name also appears"
    mounts = [mount for mount in container["volumeMounts"] if mount["name"] == volumes[0]["name"]]
    assert len(mounts) == 1
    # A subPath mount is a copy taken at start: a rotated Secret would never reach the server.
    assert "subPath" not in mounts[0] and "subPathExpr" not in mounts[0]
    assert mounts[0]["readOnly"] is True
    keys_file = PurePosixPath(env_of(container)["RECAP_API_KEYS_FILE"]["value"])
    assert keys_file.parent == PurePosixPath(mounts[0]["mountPath"])
    files = {**secret.get("data", {}), **secret.get("stringData", {})}
    assert keys_file.name in files, f"the Secret has no {keys_file.name}"


def test_secret_holds_no_real_key(objects: list[dict[str, Any]]) -> None:
    secret = one(objects, "Secret")
    assert "data" not in secret, "a placeholder in stringData, readable as such"
    for text in secret["stringData"].values():
        assert only_digests(text) == []
        for line in text.splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                assert set(line.split(":", 1)[1]) == {"0"}, "a placeholder digest that no key has"


def test_workers_from_the_cpu_limit(container: dict[str, Any], settings: dict[str, str]) -> None:
    assert "RECAP_WORKERS" not in settings, "RECAP_WORKERS comes from the CPU limit, not the ConfigMap"
    source = env_of(container)["RECAP_WORKERS"]["valueFrom"]["resourceFieldRef"]
    assert source["resource"] == "limits.cpu"
    assert source.get("containerName", container["name"]) == container["name"]
    divisor = source.get("divisor", "1")
    assert cpus(divisor) == 1, "a divisor of 1: whole CPUs"
    workers = downward_cpu_limit(container["resources"]["limits"]["cpu"], divisor)
    assert 1 <= workers <= 256, "--workers must be 1 to 256"
    assert cpus(container["resources"]["requests"]["cpu"]) <= cpus(container["resources"]["limits"]["cpu"])
    assert container["resources"]["limits"]["memory"]


def test_models_from_a_volume(
    pod: dict[str, Any], container: dict[str, Any], settings: dict[str, str]
) -> None:
    repository = setting(settings, "model_repository")
    mounts = [mount for mount in container["volumeMounts"] if mount["mountPath"] == str(repository)]
    assert len(mounts) == 1, f"no volume on RECAP_MODEL_REPOSITORY {repository}"
    assert mounts[0]["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[0]["name"])
    assert "persistentVolumeClaim" in volume or "emptyDir" in volume


def test_scrape_annotations_on_the_metrics_port(
    objects: list[dict[str, Any]],
    deployment: dict[str, Any],
    container: dict[str, Any],
    settings: dict[str, str],
) -> None:
    metrics = named_port(container, "metrics")
    assert metrics == int(setting(settings, "metrics_port"))
    service = one(objects, "Service")
    for holder in (deployment["spec"]["template"]["metadata"], service["metadata"]):
        annotations = holder["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(metrics)
        assert annotations["prometheus.io/path"] == "/metrics"
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == {"http", "grpc", "metrics"}
    assert ports["http"]["port"] == 8000 and ports["http"]["targetPort"] in ("http", 8000)
    assert ports["metrics"]["port"] == 8002 and ports["metrics"]["targetPort"] in ("metrics", metrics)
    selector = service["spec"]["selector"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items(), "the Service selects the pods"


def test_network_policy(
    objects: list[dict[str, Any]], deployment: dict[str, Any], settings: dict[str, str]
) -> None:
    policy = one(objects, "NetworkPolicy")["spec"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items()
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    by_port: dict[int, list[dict[str, Any]]] = {}
    for rule in policy["ingress"]:
        for port in rule["ports"]:
            by_port.setdefault(int(port["port"]), []).append(rule)
    api, metrics = int(setting(settings, "port")), int(setting(settings, "metrics_port"))
    grpc = int(setting(settings, "grpc_port"))
    assert set(by_port) == {api, grpc, metrics}
    for port in (api, grpc):
        assert any("from" not in rule for rule in by_port[port]), f"the API on {port} is open to every client"
    for rule in by_port[metrics]:
        assert rule.get("from"), "the metrics listener is not open to everyone"
        for peer in rule["from"]:
            assert peer["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    egress_ports = {int(port["port"]) for rule in policy["egress"] for port in rule["ports"]}
    assert egress_ports == {53}, "egress: DNS only"


def test_autoscaling_and_disruption_budget(objects: list[dict[str, Any]], deployment: dict[str, Any]) -> None:
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert hpa["spec"]["minReplicas"] >= 2
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    pdb = one(objects, "PodDisruptionBudget")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["spec"].get("maxUnavailable", 0) < hpa["spec"]["minReplicas"]


def test_requests_hpa_example_uses_the_adapter_rule(objects: list[dict[str, Any]]) -> None:
    [hpa] = load_documents(K8S / "hpa-requests-example.yaml")
    cpu_hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["metadata"]["name"] == cpu_hpa["metadata"]["name"], "it replaces the CPU HPA, not fights it"
    assert hpa["spec"]["scaleTargetRef"] == cpu_hpa["spec"]["scaleTargetRef"]
    pods = [metric["pods"] for metric in hpa["spec"]["metrics"] if metric["type"] == "Pods"]
    assert len(pods) == 1
    [adapter] = load_documents(K8S / "prometheus-adapter-rule.yaml")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    named = {rule["name"]["as"]: rule for rule in rules}
    rule = named[pods[0]["metric"]["name"]]
    assert rule["seriesQuery"].startswith("recap_requests_total{")
    assert re.search(r"\brate\(<<\.Series>>\{<<\.LabelMatchers>>\}\[\w+\]\)", rule["metricsQuery"])
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    # The counter exists: the server's request counter family is recap_requests (exposed as _total).
    assert re.search(r'Counter\(\s*"recap_requests",', (REPO / "service" / "metrics.py").read_text())

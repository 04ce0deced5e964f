"""docker-compose.yml validates and holds what an operator needs (no Docker engine here: config only)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.compose import REPO, compose_binary, compose_config

pytestmark = pytest.mark.skipif(
    compose_binary() is None,
    reason="docker-compose is not installed (`make system-deps` installs it; CI does)",
)


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    found: dict[str, Any] = compose_config()["services"]
    return found


def test_plain_config_validates() -> None:
    done = subprocess.run(
        [str(compose_binary()), "config", "--quiet"],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_profiles(services: dict[str, Any]) -> None:
    profiles = {name: service.get("profiles", []) for name, service in services.items()}
    assert profiles == {
        "service": [],
        "service-gpu": ["gpu"],
        "locust-master": ["load"],
        "locust-worker": ["load"],
        "prometheus": ["monitoring"],
        "grafana": ["monitoring"],
        "replica-1": ["scale"],
        "replica-2": ["scale"],
        "replica-3": ["scale"],
        "nginx": ["scale"],
    }


@pytest.mark.parametrize("name", ["service", "service-gpu", "replica-1", "replica-2", "replica-3"])
def test_servers_are_operable(services: dict[str, Any], name: str) -> None:
    service = services[name]
    # One token after `python -m`: podman's Docker API splits an argument on spaces (python -c "...").
    assert service["healthcheck"]["test"] == ["CMD", "python", "-m", "service.healthcheck"]
    assert service["restart"] in ("unless-stopped", "always", "on-failure")
    limits = service["deploy"]["resources"]["limits"]
    assert float(limits["cpus"]) > 0 and limits["memory"]
    assert any(v.endswith(":/models:ro") for v in service["volumes"]), "models must be mounted read-only"
    env = service["environment"]
    assert env["RECAP_MODEL_REPOSITORY"] == "/models" and env["RECAP_HOST"] == "0.0.0.0"
    assert service["command"] == ["python", "-m", "service"], "settings come from RECAP_* variables"
    assert service.get("read_only") is True


def test_gpu_service_reserves_a_gpu_and_prefers_cuda(services: dict[str, Any]) -> None:
    gpu = services["service-gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] for d in devices)
    assert json.loads(gpu["environment"]["RECAP_PROVIDERS"])[0] == "cuda"
    assert gpu["build"]["dockerfile"] == "docker/service-gpu.Dockerfile"
    assert services["service"]["build"]["dockerfile"] == "docker/service.Dockerfile"


def test_locust_workers_are_scalable(services: dict[str, Any]) -> None:
    master, worker = services["locust-master"], services["locust-worker"]
    assert "--master" in master["command"] and "8089" in str(master["ports"])
    assert "--worker" in worker["command"]
    assert worker["command"][worker["command"].index("--master-host") + 1] == "locust-master"
    # --scale needs no fixed name and no published port on the worker.
    assert "container_name" not in worker and "ports" not in worker
    assert master["depends_on"]["service"]["condition"] == "service_healthy"


def test_bind_mounts_exist_in_the_repository(services: dict[str, Any]) -> None:
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("/"):
                assert Path(source).exists(), f"{name}: {source} does not exist"


def test_monitoring_mounts_the_project_config(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert any(v.startswith(str(REPO / "monitoring/prometheus.yml")) for v in prometheus["volumes"])
    grafana = services["grafana"]
    mounts = {v.split(":")[1]: Path(v.split(":")[0]) for v in grafana["volumes"] if v.startswith("/")}
    provisioning, dashboards = mounts["/etc/grafana/provisioning"], mounts["/var/lib/grafana/dashboards"]
    providers = yaml.safe_load((provisioning / "dashboards" / "recap-serve.yml").read_text())["providers"]
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards"
    dashboard = json.loads((dashboards / "recap-serve.json").read_text())
    datasource = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())["datasources"][
        0
    ]
    assert datasource["url"] == "http://prometheus:9090"
    used = {p["datasource"]["uid"] for p in dashboard["panels"] if p["type"] != "row"}
    assert used == {datasource["uid"]}, "every panel uses the provisioned datasource"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == "/var/lib/grafana/dashboards/recap-serve.json"


def test_prometheus_scrapes_the_services_metrics_listener_by_name(services: dict[str, Any]) -> None:
    config = yaml.safe_load((REPO / "monitoring" / "prometheus.yml").read_text())
    targets = {t for job in config["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
    port = services["service"]["environment"]["RECAP_METRICS_PORT"]
    assert f"service:{port}" in targets and f"service-gpu:{port}" in targets
    published = " ".join(str(p) for p in services["service"]["ports"])
    assert port not in published, "the open metrics port stays inside the compose network"


def test_the_servers_take_their_keys_from_a_secret(services: dict[str, Any]) -> None:
    for name in ("service", "service-gpu"):
        service = services[name]
        assert service["environment"]["RECAP_API_KEYS_FILE"] == "/run/secrets/recap_api_keys"
        assert [s["source"] if isinstance(s, dict) else s for s in service["secrets"]] == ["recap_api_keys"]
    for name in ("locust-master", "locust-worker"):
        assert services[name]["environment"]["RECAP_API_KEY_FILE"] == "/run/secrets/recap_load_key"


def test_the_scale_profile_puts_nginx_in_front_of_every_replica(services: dict[str, Any]) -> None:
    nginx = services["nginx"]
    assert any(v.startswith(f"{REPO}/deploy/nginx/nginx.compose.conf:") for v in nginx["volumes"])
    assert set(nginx["depends_on"]) == {"replica-1", "replica-2", "replica-3"}
    conf = (REPO / "deploy" / "nginx" / "nginx.compose.conf").read_text()
    for name in nginx["depends_on"]:
        assert f"server {name}:8000 " in conf  # every replica is an upstream, on the port it serves
    assert nginx.get("read_only") is True and "/tmp" in nginx["tmpfs"]

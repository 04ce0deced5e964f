"""The compose servers' settings are ones the server accepts; the GPU service's command starts natively
(on a machine without a GPU it falls back to the CPU provider and is still ready)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import security
from service.settings import Settings
from tests.helpers.compose import make_secrets, native_environment, raw_services
from tests.helpers.servers import MODELS, free_port, http_get, running_server, service_available


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets") / "secrets"
    make_secrets(folder)
    return folder


@pytest.mark.parametrize("service", ["service", "service-gpu"])
def test_compose_environment_is_valid_settings(
    service: str, secrets: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not MODELS.is_dir():
        pytest.skip("models/ is not in this checkout yet (the settings require an existing repository)")
    for key, value in native_environment(service, secrets, MODELS, 8002).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.providers[0] == ("cuda" if service == "service-gpu" else "cpu")
    assert settings.api_keys_file is not None and settings.metrics_port == 8002
    assert security.protected_mode_refusal(settings) is None  # keys: it may bind 0.0.0.0


@pytest.mark.e2e
def test_gpu_service_command_runs_natively(secrets: Path, tmp_path: Path) -> None:
    reason = service_available()
    if reason:
        pytest.skip(reason)
    command = raw_services()["service-gpu"]["command"]
    env = native_environment("service-gpu", secrets, MODELS, free_port())
    with running_server(tmp_path, command=command, env=env) as server:
        assert http_get(f"{server.url}/v2/health/ready")[0] == 200
    assert "cuda" in server.log_tail(20000).lower(), "the server says what became of the cuda provider"

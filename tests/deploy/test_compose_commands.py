"""The compose servers' settings are ones the server accepts; the GPU service's command starts natively
(on a machine without a GPU it falls back to the CPU provider and is still ready)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import Settings
from tests.helpers.compose import raw_services, substitute
from tests.helpers.servers import MODELS, http_get, running_server, service_available


def _environment(service: str) -> dict[str, str]:
    env = {key: substitute(str(value)) for key, value in raw_services()[service]["environment"].items()}
    env["RECAP_MODEL_REPOSITORY"] = str(MODELS)  # /models inside the container
    return env


@pytest.mark.parametrize("service", ["service", "service-gpu"])
def test_compose_environment_is_valid_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if not MODELS.is_dir():
        pytest.skip("models/ is not in this checkout yet (the settings require an existing repository)")
    for key, value in _environment(service).items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8000
    assert settings.providers[0] == ("cuda" if service == "service-gpu" else "cpu")


@pytest.mark.e2e
def test_gpu_service_command_runs_natively(tmp_path: Path) -> None:
    reason = service_available()
    if reason:
        pytest.skip(reason)
    command = raw_services()["service-gpu"]["command"]
    with running_server(tmp_path, command=command, env=_environment("service-gpu")) as server:
        assert http_get(f"{server.url}/v2/health/ready")[0] == 200
    assert "cuda" in server.log_tail(20000).lower(), "the server says what became of the cuda provider"

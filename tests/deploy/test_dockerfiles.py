"""The Dockerfiles: multi-stage, non-root, no torch in the service image (read statically: no engine)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from tests.helpers.compose import command_of

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
IMAGES = ["service.Dockerfile", "service-gpu.Dockerfile", "locust.Dockerfile"]


def instructions(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", (DOCKER / name).read_text())
    out = []
    for raw in text.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


@pytest.mark.parametrize("name", IMAGES)
def test_multi_stage_and_non_root(name: str) -> None:
    steps = instructions(name)
    stages = [args for keyword, args in steps if keyword == "FROM"]
    assert len(stages) >= 2, f"{name}: build and runtime stages"
    assert any(keyword == "COPY" and args.startswith("--from=builder") for keyword, args in steps)
    users = [args for keyword, args in steps if keyword == "USER"]
    assert users, f"{name}: no USER"
    assert users[-1].split(":")[0] not in ("root", "0"), f"{name}: runs as root"
    last_from = max(i for i, (keyword, _) in enumerate(steps) if keyword == "FROM")
    assert any(keyword == "USER" for keyword, _ in steps[last_from:]), f"{name}: USER not in the final stage"


@pytest.mark.parametrize("name", IMAGES)
def test_copied_sources_exist(name: str) -> None:
    for keyword, args in instructions(name):
        if keyword == "COPY" and not args.startswith("--from"):
            sources = [a for a in args.split() if not a.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists() or source == "models/", (
                    f"{name}: COPY {source} not in the repo"
                )


def _runs(name: str) -> str:
    return " ".join(args for keyword, args in instructions(name) if keyword == "RUN")


def test_service_image_installs_the_package_without_extras_or_torch() -> None:
    runs = _runs("service.Dockerfile")
    assert re.search(r"pip install \.(\s|$)", runs), "service image: `pip install .` (no extras)"
    assert "torch" not in runs.replace("'torch in the service image'", "").replace("find_spec('torch')", "")
    assert "find_spec('torch')" in runs, "the build fails when torch is importable"
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(d.lower().startswith("torch") for d in dependencies)


def test_gpu_image_swaps_in_onnxruntime_gpu() -> None:
    runs = _runs("service-gpu.Dockerfile")
    assert "pip uninstall -y onnxruntime" in runs and "onnxruntime-gpu" in runs
    assert "CUDAExecutionProvider" in runs, "the build checks the CUDA provider is compiled in"
    assert "find_spec('torch')" in runs


def test_locust_image_installs_the_load_extra() -> None:
    runs = _runs("locust.Dockerfile")
    assert "['optional-dependencies']['load']" in runs
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["load"]
    assert any(req.startswith("locust") for req in extra)
    assert not any(req.startswith(("scikit-learn", "torch")) for req in extra)


def test_images_run_the_commands_compose_gives() -> None:
    for name in ["service.Dockerfile", "service-gpu.Dockerfile"]:
        cmd = [args for keyword, args in instructions(name) if keyword == "CMD"][-1]
        assert cmd == '["python", "-m", "service"]'
        env = " ".join(args for keyword, args in instructions(name) if keyword == "ENV")
        assert "RECAP_HOST=0.0.0.0" in env and "RECAP_MODEL_REPOSITORY=/models" in env


def test_locust_image_layout_matches_the_compose_commands() -> None:
    """compose runs `locust -f load/locustfile.py` in the image's WORKDIR, which must hold load/."""
    steps = instructions("locust.Dockerfile")
    workdir = [args for keyword, args in steps if keyword == "WORKDIR"][-1]
    copies = [args.split() for keyword, args in steps if keyword == "COPY" and args.startswith("load/")]
    assert copies == [["load/", f"{workdir}/load/"]]
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    assert f"PYTHONPATH={workdir}" in env, "the locustfile imports load.catalog and load.checks"
    for service in ("locust-master", "locust-worker"):
        command = command_of(service)
        assert command[:3] == ["locust", "-f", "load/locustfile.py"], command


@pytest.mark.parametrize("name", ["service.Dockerfile", "service-gpu.Dockerfile"])
def test_the_healthcheck_is_the_one_token_module_every_engine_runs(name: str) -> None:
    """Podman's Docker API splits an exec-form argument on spaces: `python -c "..."` is never healthy
    there. The real-stack tests run this command in the built image as the engine does."""
    (check,) = [args for keyword, args in instructions(name) if keyword == "HEALTHCHECK"]
    command = json.loads(check[check.index("CMD") + len("CMD") :].strip())
    assert command == ["python", "-m", "service.healthcheck"]


@pytest.mark.parametrize("name", [*IMAGES, "prometheus.Dockerfile"])
def test_the_base_image_is_a_build_arg_and_the_proxy_ca_is_never_copied(name: str) -> None:
    steps = instructions(name)
    assert steps[0][0] == "ARG" and steps[0][1].split("=")[0] in ("PYTHON_IMAGE", "CUDA_IMAGE", "BASE_IMAGE")
    text = (DOCKER / name).read_text()
    assert "ca-certificates.crt" not in "".join(args for keyword, args in steps if keyword in ("COPY", "ADD"))
    if "pip install" in text:
        assert ("ARG", "PIP_CERT") in steps, f"{name}: pip behind a TLS-inspecting proxy needs PIP_CERT"

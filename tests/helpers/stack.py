"""The real stack under podman: a Debian base image, the project's images, podman's Docker-compatible API
for docker-compose, and the unchanged docker-compose.yml.

Docker Hub cannot be reached from the project's machines, so the base image is built from Debian
packages (mmdebstrap + podman import) and the Dockerfiles get it as a build arg. Nothing is written to
/etc: podman reads a project containers.conf through CONTAINERS_CONF (runc, because crun refuses this
machine's hybrid cgroups; no default ulimits; netavark + aardvark-dns so containers find each other by
service name, with its network files under the state folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers.servers import REPO

PROJECT = "recapstack-test"
BASE_IMAGE = "localhost/recap-serve-base:bookworm"
SERVICE_IMAGE = "localhost/recap-serve:cpu"  # compose's `image: recap-serve:cpu`, as podman names it
LOCUST_IMAGE = "localhost/recap-serve-locust:latest"
PROMETHEUS_IMAGE = "localhost/recap-prometheus:debian"
NGINX_IMAGE = "localhost/recap-nginx:debian"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Package downloads here pass a TLS-inspecting proxy whose CA is in the host's bundle: builds mount it.
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERS_CONF = """\
[containers]
default_ulimits = []

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
network_config_dir = "{networks}"
"""
TOOLS = ("podman", "runc", "mmdebstrap", "docker-compose")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def state_dir() -> Path:
    """Where the engine's config, socket and network files live (the images are in podman's store)."""
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "recap-serve" / "stack"
    root.mkdir(parents=True, exist_ok=True)
    return root


def base_image_key() -> str:
    """The label that says which recipe built the cached base image."""
    return hashlib.sha256(f"{BASE_SUITE} {' '.join(BASE_PACKAGES)} minbase".encode()).hexdigest()[:16]


@dataclass
class Engine:
    """A running `podman system service` and the environment that points podman and compose at it."""

    state: Path
    env: dict[str, str]
    service: subprocess.Popen[bytes] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls) -> Engine:
        state = state_dir()
        (state / "networks").mkdir(exist_ok=True)
        conf = state / "containers.conf"
        conf.write_text(CONTAINERS_CONF.format(networks=state / "networks"))
        socket = state / "podman.sock"
        env = {**os.environ, "CONTAINERS_CONF": str(conf), "DOCKER_HOST": f"unix://{socket}"}
        # A stale socket from an earlier run that did not stop its service would answer nothing.
        socket.unlink(missing_ok=True)
        log = (state / "service.log").open("wb")
        service = subprocess.Popen(
            ["podman", "system", "service", "--time=0", f"unix://{socket}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        log.close()
        engine = cls(state, env, service)
        deadline = time.monotonic() + 30
        while not socket.exists():
            if service.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"podman system service did not start:\n{engine.service_log()}")
            time.sleep(0.1)
        return engine

    def stop(self) -> None:
        if self.service is not None and self.service.poll() is None:
            os.killpg(self.service.pid, signal.SIGTERM)
            try:
                self.service.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.service.pid, signal.SIGKILL)
                self.service.wait()

    def service_log(self) -> str:
        path = self.state / "service.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def run(
        self, *argv: str, timeout: float = 600, check: bool = True, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(argv), cwd=REPO, env={**self.env, **(env or {})}, capture_output=True, text=True,
            timeout=timeout, check=False,
        )  # fmt: skip
        if check and done.returncode != 0:
            output = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            raise AssertionError(f"{' '.join(argv[:6])} ... failed ({done.returncode}):\n{output}")
        return done

    def podman(
        self, *argv: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("podman", *argv, timeout=timeout, check=check)

    def compose(
        self, *argv: str, env: Mapping[str, str] | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.run("docker-compose", "-p", PROJECT, *argv, env=env, timeout=timeout, check=check)

    def image_exists(self, image: str) -> bool:
        return self.podman("image", "exists", image, check=False).returncode == 0

    def inspect(self, kind: str, name: str) -> dict[str, object]:
        document: list[dict[str, object]] = json.loads(self.podman(kind, "inspect", name).stdout)
        return document[0]

    def timed(self, label: str, started: float) -> None:
        self.timings[label] = round(time.monotonic() - started, 1)

    # -- images --------------------------------------------------------------------------------------

    def ensure_base_image(self) -> bool:
        """The Debian base image, built once and kept in podman's store; True when it was built now."""
        key = base_image_key()
        if self.image_exists(BASE_IMAGE):
            labels = self.inspect("image", BASE_IMAGE).get("Labels") or {}
            if isinstance(labels, dict) and labels.get("recap-serve.base") == key:
                return False
        started = time.monotonic()
        tarball = self.state / "base.tar"
        self.run(
            "mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
            "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*", "--dpkgopt=path-exclude=/usr/share/info/*",
            BASE_SUITE, str(tarball), "http://deb.debian.org/debian",
        )  # fmt: skip
        self.podman(
            "import", "--change", f"LABEL recap-serve.base={key}", "--change", 'CMD ["python3"]',
            str(tarball), BASE_IMAGE,
        )  # fmt: skip
        tarball.unlink()
        self.timed("base image (mmdebstrap + import)", started)
        return True

    def build(self, dockerfile: str, image: str, build_args: Sequence[str] = ()) -> None:
        """podman build in Docker format. The build's RUN steps use the host network (podman 4.3 with
        netavark gives build containers no working DNS), and see the host's CA bundle, mounted."""
        started = time.monotonic()
        argv = ["build", "--format", "docker", "--network", "host", "-f", dockerfile, "-t", image]
        for arg in build_args:
            argv += ["--build-arg", arg]
        if CA_BUNDLE.is_file():
            argv += ["--build-arg", f"PIP_CERT={CA_BUNDLE}", "--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
        self.podman(*argv, ".", timeout=900)
        self.timed(f"build {image}", started)

    def image_size(self, image: str) -> int:
        size = self.inspect("image", image)["Size"]
        assert isinstance(size, int)
        return size

    # -- the compose project -------------------------------------------------------------------------

    def containers(self) -> list[str]:
        """Names of the project's containers, running or not."""
        done = self.podman(
            "ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format", "{{.Names}}"
        )
        return [line for line in done.stdout.splitlines() if line]

    def wait_healthy(self, container: str, timeout: float = 90) -> int:
        """Run the container's own healthcheck until it passes; returns how many runs it took.

        Podman runs healthchecks on a schedule only through systemd timers, which this machine (and a
        container-based CI) does not have; `podman healthcheck run` is that scheduled run, done by hand.
        It executes the image's HEALTHCHECK command and records the status compose then sees.
        """
        deadline = time.monotonic() + timeout
        runs = 0
        while time.monotonic() < deadline:
            runs += 1
            if self.podman("healthcheck", "run", container, check=False).returncode == 0:
                return runs
            time.sleep(1)
        logs = self.podman("logs", container, check=False)
        raise AssertionError(
            f"{container} not healthy in {timeout:.0f} s:\n{logs.stdout[-2000:]}{logs.stderr[-2000:]}"
        )

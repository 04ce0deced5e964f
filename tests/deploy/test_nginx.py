"""deploy/nginx: the committed config and its compose variant pass `nginx -t`, the variant is what
`make nginx-compose-conf` renders, and the settings the README promises are there."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from service.settings import Settings
from tests.helpers.servers import REPO

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
CONF = REPO / "deploy" / "nginx" / "nginx.conf"
COMPOSE_CONF = REPO / "deploy" / "nginx" / "nginx.compose.conf"
REPLICA_HOSTS = "127.0.0.1 localhost\n127.0.0.1 replica-1 replica-2 replica-3\n"


def nginx_test(conf: Path, prefix: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-e", "stderr", "-c", str(conf)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


@pytest.fixture
def nginx(tmp_path: Path) -> Path:
    if not Path(NGINX).exists():
        pytest.skip("nginx is missing: `make system-deps` installs it")
    return tmp_path


def test_the_committed_config_passes_nginx_t_as_it_is(nginx: Path) -> None:
    done = nginx_test(CONF, nginx)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_the_compose_variant_is_the_rendering_of_the_committed_config(tmp_path: Path) -> None:
    rendered = tmp_path / "nginx.compose.conf"
    subprocess.run(
        ["make", "--no-print-directory", "nginx-compose-conf", f"NGINX_COMPOSE_CONF={rendered}"],
        cwd=REPO, check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    assert rendered.read_text() == COMPOSE_CONF.read_text(), "run `make nginx-compose-conf` and commit it"
    text = COMPOSE_CONF.read_text()
    assert re.findall(r"server (replica-\d):8000", text) == ["replica-1", "replica-2", "replica-3"]
    directives = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    assert not [line for line in directives if "127.0.0.1" in line]


def test_the_compose_variant_passes_nginx_t_where_the_replica_names_resolve(nginx: Path) -> None:
    """nginx resolves upstream names when it loads: the check runs with a private /etc/hosts naming
    the compose replicas (a mount namespace; the stack suite runs it for real)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a private /etc/hosts needs root and unshare (the stack suite checks it in compose)")
    hosts = nginx / "hosts"
    hosts.write_text(REPLICA_HOSTS)
    script = f"mount --bind {hosts} /etc/hosts && exec {NGINX} -t -p {nginx} -e stderr -c {COMPOSE_CONF}"
    argv = ["unshare", "--mount", "sh", "-c", script]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_the_config_says_what_the_readme_promises() -> None:
    text = CONF.read_text()
    body_limit = re.search(r"client_max_body_size (\d+)m;", text)
    assert body_limit is not None
    assert int(body_limit.group(1)) * 1024 * 1024 == Settings.model_fields["max_body_bytes"].default
    retry = re.search(r"proxy_next_upstream ([^;]+);", text)
    assert retry is not None and {"error", "timeout", "non_idempotent"} <= set(retry.group(1).split())
    assert "http_504" not in retry.group(1)
    assert "no side effects" in text  # why retrying a POST is safe, said where it is done
    assert re.search(r"keepalive \d+;", text) and 'proxy_set_header Connection "";' in text
    assert len(re.findall(r"server 127\.0\.0\.1:\d+ max_fails=\d+ fail_timeout=\d+s;", text)) == 3
    stream = re.search(r"location ~ /generate_stream\$ \{(.*?)\}", text, re.DOTALL)
    assert stream is not None and "proxy_buffering off;" in stream.group(1)


def test_the_topology_picture_is_generated_by_its_script(tmp_path: Path) -> None:
    out = tmp_path / "topology.png"
    subprocess.run([sys.executable, str(REPO / "docs" / "topology.py"), str(out)], check=True, timeout=120)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert (REPO / "docs" / "topology.png").is_file()


def test_the_config_runs_unprivileged_with_only_its_prefix_writable(nginx: Path) -> None:
    """As the compose image runs it: user nobody, nothing writable but the -p prefix (Debian's build
    would put temporary files in /var/lib/nginx)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("switching to user nobody needs root and setpriv")
    prefix = Path(tempfile.mkdtemp(prefix="recap-nginx-"))
    try:
        prefix.chmod(0o777)
        argv = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", NGINX, "-t"]
        argv += ["-p", str(prefix), "-e", "stderr", "-c", str(CONF)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        assert done.returncode == 0, done.stderr
    finally:
        shutil.rmtree(prefix, ignore_errors=True)

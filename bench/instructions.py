"""CPU instructions per V2 infer request, in process, for this checkout and a commit (callgrind).

Time on this project's shared machines moves by 10-20 % from run to run; an instruction count does not
(repeat runs agree to about 0.1 %). It covers the server's own Python path (front door, pipeline,
decode, session.run, encode, metrics) without the socket and HTTP parsing work, so it says where a
change costs and by how much; `bench.bench --ab` says what that means for a real server.

    python -m bench.instructions [COMMIT]      # default HEAD^; needs valgrind (make system-deps)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bench import ROOT, extract_commit

REQUESTS = 3000


def instructions_per_request(code: Path, repository: Path, work: Path, requests: int = REQUESTS) -> float:
    """Run bench/inprocess.py on `code` under callgrind, counting only the `requests` calls."""
    signals = work / f"signals-{time.monotonic_ns()}"
    signals.mkdir()
    log = signals / "callgrind.log"
    command = [
        "valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={signals / 'out'}",
        sys.executable, str(ROOT / "bench" / "inprocess.py"), str(requests), str(repository), str(signals),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(code), "PYTHONHASHSEED": "0"}
    with log.open("wb") as sink:
        process = subprocess.Popen(command, cwd=code, env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        _wait_for(signals / "ready", process)
        subprocess.run(["callgrind_control", "-i", "on", str(process.pid)], check=True, capture_output=True)
        (signals / "go").touch()
        _wait_for(signals / "done", process)
        subprocess.run(["callgrind_control", "-i", "off", str(process.pid)], check=True, capture_output=True)
        (signals / "go").unlink()
        process.wait(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    collected = re.search(r"Collected : (\d+)", log.read_text())
    if collected is None:
        raise RuntimeError(f"callgrind reported no count:\n{log.read_text()[-2000:]}")
    return int(collected.group(1)) / requests


def _wait_for(path: Path, process: subprocess.Popen[bytes], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the in-process server stopped before {path.name} (rc {process.returncode})")
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("commit", nargs="?", default="HEAD^")
    parser.add_argument("--model-repository", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is missing: `make system-deps` (apt-get install -y valgrind)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="recap-instructions-"))
    try:
        described = extract_commit(args.commit, work / "old")
        repository = args.model_repository.resolve()
        old = instructions_per_request(work / "old", repository, work)
        new = instructions_per_request(ROOT, repository, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"instructions per in-process V2 infer request ({REQUESTS} requests, callgrind):")
    print(f"  old {described}: {old:,.0f}")
    print(f"  new (this checkout): {new:,.0f}")
    print(f"  new/old = {new / old:.3f} ({new - old:+,.0f} instructions per request)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

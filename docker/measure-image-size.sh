#!/usr/bin/env bash
# Estimate the recap-serve CPU image without a Docker engine: build the same venv the Dockerfile's builder
# stage builds (`pip install .`, no extras; pip and setuptools dropped) in a temp dir and measure it, plus
# the zoo the image copies. The base image (python:3.11-slim-bookworm) comes on top; see README.
#   bash docker/measure-image-size.sh
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check . >"$work/pip.log" 2>&1 \
  || { cat "$work/pip.log"; exit 1; }
if "$work/venv/bin/python" -c "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"; then
  echo "torch is importable in the service venv: the image must not hold it" >&2
  exit 1
fi
"$work/venv/bin/python" -m pip uninstall --quiet -y pip setuptools >/dev/null 2>&1 || true
find "$work/venv" -name '__pycache__' -prune -exec rm -rf {} +
echo "service venv (pip install ., no torch): $(du -sh "$work/venv" | cut -f1)"
echo "largest packages:"
du -sh "$work/venv"/lib/python3*/site-packages/* | sort -h | tail -6 | sed 's/^/  /'
echo "models/ (copied into the image): $(du -sh models | cut -f1)"
"$work/venv/bin/python" - <<'PY'
from importlib.metadata import distributions
print("packages:", ", ".join(sorted({f"{d.metadata['Name']}=={d.version}" for d in distributions()})))
PY

# syntax=docker/dockerfile:1
# recap-serve, CPU image: onnxruntime + FastAPI in a venv, the zoo in /models, run as a non-root user.
#   docker build -f docker/service.Dockerfile -t recap-serve:cpu .
# No torch, no extras: `pip install .` only (the build fails if torch sneaks in).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# Only where downloads pass a TLS-inspecting proxy: the CA bundle pip should trust, mounted into the
# build (never copied into an image), e.g. --build-arg PIP_CERT=/etc/ssl/certs/ca-certificates.crt
# with podman build --volume /etc/ssl/certs/ca-certificates.crt:/etc/ssl/certs/ca-certificates.crt:ro
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install . \
 && python -c "import importlib.util as u, sys; sys.exit('torch in the service image' if u.find_spec('torch') else 0)" \
 && python -m pip uninstall -y pip setuptools \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin recap
COPY --from=builder /opt/venv /opt/venv
# Owned by root, readable by all: the server only reads its repository (compose mounts it :ro).
COPY models/ /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECAP_HOST=0.0.0.0 \
    RECAP_PORT=8000 \
    RECAP_MODEL_REPOSITORY=/models
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
# One token, not `python -c "..."`: podman's Docker API splits an inline script on spaces.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-m", "service.healthcheck"]
CMD ["python", "-m", "service"]

# syntax=docker/dockerfile:1
# recap-serve, GPU image: onnxruntime-gpu (CUDA 12, cuDNN 9) instead of onnxruntime; same server, same zoo.
#   docker build -f docker/service-gpu.Dockerfile -t recap-serve:gpu .
# Run with an NVIDIA runtime (compose: `--profile gpu`) and RECAP_PROVIDERS='["cuda","cpu"]'.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

FROM ${CUDA_IMAGE} AS builder
# See service.Dockerfile: the CA bundle of a TLS-inspecting proxy, mounted into the build only.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
# onnxruntime and onnxruntime-gpu share the `onnxruntime` package: drop the CPU wheel, then reinstall
# the GPU one so its files are the ones left. The CUDA provider is compiled in (no GPU needed to check).
RUN pip install ".[gpu]" \
 && pip uninstall -y onnxruntime \
 && pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.20" \
 && python -c "import onnxruntime as o; assert 'CUDAExecutionProvider' in o.get_available_providers(), o.get_available_providers()" \
 && python -c "import importlib.util as u, sys; sys.exit('torch in the service image' if u.find_spec('torch') else 0)" \
 && python -m pip uninstall -y pip setuptools \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

FROM ${CUDA_IMAGE} AS runtime
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin recap
COPY --from=builder /opt/venv /opt/venv
COPY models/ /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RECAP_HOST=0.0.0.0 \
    RECAP_PORT=8000 \
    RECAP_MODEL_REPOSITORY=/models \
    RECAP_PROVIDERS='["cuda","cpu"]'
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-m", "service.healthcheck"]
CMD ["python", "-m", "service"]

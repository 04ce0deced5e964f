# syntax=docker/dockerfile:1
# Locust with the project's locustfile and payloads: master and workers of the compose `load` profile.
#   docker build -f docker/locust.Dockerfile -t recap-serve:locust .
# Installs exactly the `load` extra of pyproject.toml (locust), not the server nor scikit-learn:
# the payloads are pre-drawn JSON files in load/payloads/.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
# See service.Dockerfile: the CA bundle of a TLS-inspecting proxy, mounted into the build only.
ARG PIP_CERT
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml /src/
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('/src/pyproject.toml', 'rb'))['project']['optional-dependencies']['load']))" > /src/load-requirements.txt \
 && pip install -r /src/load-requirements.txt

FROM ${PYTHON_IMAGE} AS runtime
RUN useradd --system --uid 10001 --create-home --home-dir /home/locust --shell /usr/sbin/nologin locust
COPY --from=builder /opt/venv /opt/venv
COPY load/ /app/load/
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /app
# 8089: web UI; 5557: master <-> worker traffic.
EXPOSE 8089 5557
CMD ["locust", "-f", "load/locustfile.py", "--help"]

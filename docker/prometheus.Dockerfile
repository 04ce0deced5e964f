# syntax=docker/dockerfile:1
# Prometheus from Debian's package: for machines that cannot pull prom/prometheus (Docker Hub out of
# reach). The real-stack tests build it; compose runs it with PROMETHEUS_IMAGE=<this image>.
#   docker build -f docker/prometheus.Dockerfile --build-arg BASE_IMAGE=debian:bookworm-slim -t recap-prometheus .
# Same interface as the official image: prometheus is the entrypoint, data in /prometheus, user nobody.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /prometheus && chown nobody:nogroup /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

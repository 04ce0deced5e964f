# syntax=docker/dockerfile:1
# nginx from Debian's package, for the compose `scale` profile (Docker Hub's nginx image is out of reach
# here). It runs unprivileged on 8080 with a read-only root: its prefix (pid, temp files) is under /tmp.
#   docker build -f docker/nginx.Dockerfile --build-arg BASE_IMAGE=debian:bookworm-slim -t recap-nginx .
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled/*
USER nobody
EXPOSE 8080
# The config comes from the compose file (deploy/nginx/nginx.compose.conf mounted read-only).
ENTRYPOINT ["/bin/sh", "-c", "mkdir -p /tmp/nginx && exec nginx -p /tmp/nginx -e stderr -c /etc/recap/nginx.conf -g 'daemon off;'"]

# The tokenrelay image: the runtime dependencies only, a non-root user, `make serve`'s
# defaults (port 8000, the embedded configuration, SQLite in the working directory) but
# listening on every interface, so a master key is required (TOKENRELAY_MASTER_KEY).
#
#   podman build -t tokenrelay .          # or: docker build -t tokenrelay .
#   podman run -p 127.0.0.1:8000:8000 -e TOKENRELAY_MASTER_KEY=... -v tokenrelay:/var/lib/tokenrelay tokenrelay
#
# BASE is any Debian-like image with python3 (>= 3.11, with venv) and useradd; the
# default is the official slim image. Without a registry, build one with
# scripts/container-base.sh (debootstrap) and pass --build-arg BASE=localhost/debian-python:12.
ARG BASE=docker.io/library/python:3.12-slim

FROM ${BASE} AS build
# pip's index can be set for the build (e.g. a mirror): --build-arg PIP_INDEX_URL=...;
# behind a TLS-intercepting proxy, hand pip its CA bundle as a build secret (used for the
# install only, not kept in the image): --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python3 -m venv /opt/tokenrelay
COPY pyproject.toml README.md /src/
COPY src /src/src
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi; \
    /opt/tokenrelay/bin/pip install /src

FROM ${BASE}
COPY --from=build /opt/tokenrelay /opt/tokenrelay
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/tokenrelay --create-home tokenrelay
# The SQLite file (tokenrelay.db) and the usage spool live in the working directory.
WORKDIR /var/lib/tokenrelay
VOLUME ["/var/lib/tokenrelay"]
USER tokenrelay
ENV PATH=/opt/tokenrelay/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TOKENRELAY_HOST=0.0.0.0 \
    TOKENRELAY_PORT=8000
EXPOSE 8000
# Asks the port the gateway was told to use; `podman build --format docker` keeps it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TOKENRELAY_PORT', '8000'), timeout=4)"]
# SIGTERM drains streams for shutdown_drain seconds (30), then ends the rest resumably:
# give `podman stop` / `docker stop` a longer timeout than that (-t 45).
STOPSIGNAL SIGTERM
ENTRYPOINT ["tokenrelay"]
CMD ["serve"]

# syntax=docker/dockerfile:1
# pgcast: one image for every role (migrate, listener, gateway, tls).
# Build stage installs the package into a venv; the runtime stage copies only the
# venv and runs as an unprivileged user. The gateway runs under gunicorn with
# aiohttp's uvloop worker (deploy/gunicorn_conf.py).
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/pgcast
ENV PATH=/opt/pgcast/bin:$PATH
WORKDIR /src
# Everything .dockerignore lets through: the packages pyproject.toml names, sql/.
COPY . .
RUN pip install .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/pgcast/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 pgcast \
 && useradd --system --uid 10001 --gid pgcast --no-create-home --shell /usr/sbin/nologin pgcast \
 && mkdir -p /tls && chown pgcast:pgcast /tls
COPY --from=build /opt/pgcast /opt/pgcast
WORKDIR /app
COPY deploy/__init__.py deploy/certs.py deploy/gunicorn_conf.py ./deploy/
USER 10001:10001
EXPOSE 8080 8081
# The gateway's liveness; compose and k8s give the listener its own (port 8081).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('PGCAST_PORT') or '8080'), timeout=2)"]
CMD ["gunicorn", "--config", "deploy/gunicorn_conf.py", "gateway.app:gunicorn_app"]

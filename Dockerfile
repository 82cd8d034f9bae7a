# syntax=docker/dockerfile:1
# regwatch: Prometheus exporter and SRE agent for private container registries.
#   docker build -t regwatch .
#   docker run --rm -v $PWD/regwatch.yml:/etc/regwatch/config.yaml:ro regwatch check-config /etc/regwatch/config.yaml
#   docker run --rm -p 9732:9732 -v $PWD/regwatch.yml:/etc/regwatch/config.yaml:ro regwatch
# The image runs as an unprivileged user on a read-only root file system: only /tmp needs to
# be writable (mount an emptyDir there), and state such as log positions goes to a volume.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a wheel of regwatch and of every dependency, so the runtime stage needs no compiler.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY regwatch ./regwatch
RUN pip wheel --wheel-dir /wheels .

# ---- runtime: the slim base, the wheels, nothing else (no skopeo: regwatch speaks the registry API itself).
FROM ${PYTHON_IMAGE}
ARG UID=10001
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels regwatch \
 && groupadd --system --gid ${UID} regwatch \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin regwatch \
 && mkdir -p /etc/regwatch /var/lib/regwatch \
 && chown ${UID}:${UID} /var/lib/regwatch
LABEL org.opencontainers.image.title="regwatch" \
      org.opencontainers.image.description="Prometheus exporter and SRE agent for private container registries" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /var/lib/regwatch
EXPOSE 9732
HEALTHCHECK --interval=30s --timeout=5s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9732/healthz', timeout=4)"]
ENTRYPOINT ["regwatch"]
CMD ["serve", "--config", "/etc/regwatch/config.yaml"]

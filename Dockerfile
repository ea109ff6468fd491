# The engine image: one image, one CLI (bp-openmeter api | sink | migrate).
# Runs as UID 65532 with a read-only root filesystem; only /tmp needs to be writable.

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/engine \
 && /opt/engine/bin/pip install --upgrade pip \
 && /opt/engine/bin/pip install . \
 && /opt/engine/bin/python -m compileall -q /opt/engine

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="bp-openmeter engine" \
      org.opencontainers.image.description="OpenMeter-v1-compatible metering on NATS JetStream, PostgreSQL and Valkey" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --gid 65532 engine && useradd --uid 65532 --gid 65532 --no-create-home --shell /usr/sbin/nologin engine
COPY --from=build /opt/engine /opt/engine
ENV PATH=/opt/engine/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 65532:65532
EXPOSE 8888 10000
ENTRYPOINT ["bp-openmeter"]
CMD ["api"]

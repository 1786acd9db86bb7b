# syntax=docker/dockerfile:1
# disksnap images. Two targets:
#   docker build --target engine -t disksnap/engine:TAG .   # disksnap-engine (and the CLI)
#   docker build --target agent  -t disksnap/agent:TAG .    # disksnap-agent + qemu-utils
# `make image` (scripts/build-image) builds both, and says "skipped" where no container engine runs.
#
# builder: builds the project wheel and installs it with its runtime dependencies (no dev
# extras) into a virtualenv at /opt/disksnap; the runtime stages copy only that virtualenv.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY disksnap ./disksnap
COPY engine_svc ./engine_svc
COPY storage_agent ./storage_agent
RUN python -m pip wheel --wheel-dir /wheels . \
 && python -m venv /opt/disksnap \
 && /opt/disksnap/bin/pip install --no-index --find-links /wheels disksnap \
 && /opt/disksnap/bin/pip uninstall --yes pip \
 && /opt/disksnap/bin/python -m compileall -q /opt/disksnap/lib

# runtime: the slim Python image plus an unprivileged user; uid/gid 10001 is what the
# Kubernetes manifests run as and what the agent's host directories are chowned to.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/disksnap/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 disksnap \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin disksnap
LABEL org.opencontainers.image.title="disksnap" \
      org.opencontainers.image.licenses="Apache-2.0"

FROM runtime AS agent-os
RUN apt-get update \
 && apt-get install --yes --no-install-recommends qemu-utils \
 && rm -rf /var/lib/apt/lists/* \
 && qemu-img --version

FROM agent-os AS agent
COPY --from=builder /opt/disksnap /opt/disksnap
USER 10001:10001
EXPOSE 7701 7711
ENTRYPOINT ["disksnap-agent"]

FROM runtime AS engine
COPY --from=builder /opt/disksnap /opt/disksnap
USER 10001:10001
EXPOSE 7700 7710
ENTRYPOINT ["disksnap-engine"]
CMD ["--help"]

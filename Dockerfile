# syntax=docker/dockerfile:1
# One image for every counterpick process: the six gRPC services and the HTTP edge.
# docker-compose.yml picks the process per container (`python -m services.<name>` or
# `python -m gateway`), so the mesh ships and rolls back as a single artifact.
#
#   docker build -t counterpick:local .

ARG PYTHON_IMAGE=python:3.12-slim-bookworm
# Same uv release as the lock was written with; the lock format must be readable by it.
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${UV_IMAGE} AS uv

# ---- constants: the dotaconstants npm package (heroes, patches) the services read ----
FROM ${NODE_IMAGE} AS constants
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

# ---- builder: resolve nothing, install exactly what uv.lock says ----
FROM ${PYTHON_IMAGE} AS builder
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3.12 \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app

# Dependencies first, in their own layer: code edits do not reinstall 1 GB of wheels.
COPY pyproject.toml uv.lock ./
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-install-project

# Then the project itself, built as a wheel (--no-editable) so the runtime stage needs only the
# venv. pyproject's [tool.hatch.build.targets.wheel] maps proto/gen/python/counterpick to the
# top-level `counterpick` package, next to `services` and `gateway`. README.md is the
# project's `readme`, which hatchling requires to build.
COPY README.md ./
COPY proto/gen/python ./proto/gen/python
COPY gateway ./gateway
COPY services ./services
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# ---- runtime: the interpreter, the venv, an unprivileged user; no uv, no sources ----
FROM ${PYTHON_IMAGE} AS runtime
ARG APP_UID=10001
RUN groupadd --system --gid "${APP_UID}" counterpick \
    && useradd --system --uid "${APP_UID}" --gid counterpick \
        --home-dir /app --no-create-home --shell /usr/sbin/nologin counterpick
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    DOTACONSTANTS_DIR=/app/dotaconstants
WORKDIR /app
COPY --from=constants /build/node_modules/dotaconstants/build /app/dotaconstants
# Root-owned and read-only to the service user: a compromised process cannot patch its own code.
COPY --from=builder /app/.venv /app/.venv
USER ${APP_UID}:${APP_UID}

# 8000 edge HTTP; 9464 Prometheus metrics; 50051-50056 ingest, etl, model, auth, user, draft gRPC.
EXPOSE 8000 9464 50051 50052 50053 50054 50055 50056
# Compose overrides this per container; a bare `docker run` gets the edge.
CMD ["python", "-m", "gateway"]

# streambandit: one image for the API (`streambandit api`) and the stream workers
# (`streambandit worker`). No secrets are baked in: every setting, API keys included,
# comes from STREAMBANDIT_* variables at run time (see docker-compose.yml).

# -- build: install the project and its dependencies into a virtualenv ---------------------
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Compilers only for a dependency that has no wheel for this platform; the runtime
# stage below does not carry them.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bandit ./bandit
COPY streams ./streams
COPY policies ./policies
COPY replay ./replay
RUN /opt/venv/bin/pip install --upgrade pip \
    && /opt/venv/bin/pip install .

# -- runtime -----------------------------------------------------------------------------
FROM python:3.11-slim

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STREAMBANDIT_API__HOST=0.0.0.0 \
    STREAMBANDIT_API__PORT=8000 \
    STREAMBANDIT_DECISION_LOG__DIRECTORY=/data/decisions \
    STREAMBANDIT_LOG_FORMAT=json

RUN groupadd --system --gid 10001 streambandit \
    && useradd --system --uid 10001 --gid streambandit --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin streambandit \
    && mkdir -p /data/decisions \
    && chown -R streambandit:streambandit /data

COPY --from=build /opt/venv /opt/venv

# Local files (decision logs, Faust's data directory) go under /data; mount a volume there.
WORKDIR /data
USER streambandit:streambandit

# 8000: the apps' routes; 9100: the operators' (metrics, docs) when
# STREAMBANDIT_API__OPS_PORT=9100 (docker-compose.yml sets it).
EXPOSE 8000 9100
ENTRYPOINT ["streambandit"]
CMD ["api"]

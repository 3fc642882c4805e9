#!/usr/bin/env bash
# Installs what build-images.sh and the image check need on Debian: podman (with runc), debootstrap, and
# podman-compose in .venv (Debian's 1.0.3 lacks `!reset` and `env_file` entries with `required`).
# Where the machine forbids raising resource limits (no CAP_SYS_RESOURCE, as in a sandbox) or mixes cgroup v1 and v2
# (crun refuses that), containers.conf sets limits within the current ones and runc as the runtime.
set -euo pipefail
cd "$(dirname "$0")/../.."
sudo=$([ "$(id -u)" -eq 0 ] || echo sudo)
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || ! command -v runc >/dev/null; then
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q podman runc debootstrap
fi
test -x .venv/bin/podman-compose || .venv/bin/python -m pip install --quiet 'podman-compose>=1.6'
conf=/etc/containers/containers.conf
capabilities=$(awk '/^CapEff/ {print $2}' /proc/self/status)
no_sys_resource=$(( (16#$capabilities >> 24 & 1) == 0 ))
hybrid_cgroups=$([ -d /sys/fs/cgroup/unified ] && echo 1 || echo 0)
if [ ! -e "$conf" ] && { [ "$no_sys_resource" = 1 ] || [ "$hybrid_cgroups" = 1 ]; }; then
    $sudo mkdir -p /etc/containers
    {
        echo "# Written by deploy/local/setup-podman.sh for this machine."
        # Podman's defaults raise the open files and processes limits, which needs CAP_SYS_RESOURCE; podman itself
        # runs with at most 32768 processes.
        if [ "$no_sys_resource" = 1 ]; then
            printf '[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=32768:32768"]\n' "$(ulimit -Hn)" "$(ulimit -Hn)"
        fi
        if [ "$hybrid_cgroups" = 1 ]; then printf '[engine]\nruntime = "runc"\n'; fi
    } | $sudo tee "$conf" >/dev/null
fi

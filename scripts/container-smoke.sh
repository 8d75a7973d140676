#!/usr/bin/env bash
# Build the image with podman and smoke-test it: two replicas on loopback sharing Redis
# and PostgreSQL, a stream resumed across a restart of one (tests/test_container_smoke.py).
#   scripts/container-smoke.sh                       # base from debootstrap (no registry)
#   BASE=docker.io/library/python:3.12-slim scripts/container-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE="${IMAGE:-localhost/tokenrelay:smoke}"
if [ -z "${BASE:-}" ]; then
    BASE=localhost/debian-python:12
    bash scripts/container-base.sh "$BASE"
fi

# Find the podman flags this machine needs. On a cgroup v1/v2 hybrid host crun refuses
# to start ("cgroups in hybrid mode not supported"), runc works; without CAP_SYS_RESOURCE
# podman cannot raise the rlimits it sets by default, so lower ones are given.
podman_cmd=""
run_args=""
for candidate in "podman|" "podman --runtime runc|" \
    "podman --runtime runc|--ulimit nofile=4096:4096 --ulimit nproc=4096:4096"; do
    cmd="${candidate%%|*}"
    args="${candidate#*|}"
    # shellcheck disable=SC2086
    if $cmd run --rm --network=host $args "$BASE" true 2>/dev/null; then
        podman_cmd="$cmd"
        run_args="$args"
        break
    fi
done
if [ -z "$podman_cmd" ]; then
    echo "container-smoke: podman cannot run a container here; see tests/test_image_entrypoint.py" >&2
    exit 1
fi
echo "container-smoke: podman='$podman_cmd' run flags='$run_args'"

# The build reaches pip's index through the host network; a CA bundle for a
# TLS-intercepting proxy goes in as a build secret, not into the image.
secret=()
cert="${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}"
if [ -s "$cert" ]; then secret=(--secret "id=pip_cert,src=$cert"); fi
start=$(date +%s)
# shellcheck disable=SC2086
$podman_cmd build --format docker --network=host $run_args "${secret[@]}" \
    --build-arg "BASE=$BASE" ${PIP_INDEX_URL:+--build-arg PIP_INDEX_URL="$PIP_INDEX_URL"} \
    -t "$IMAGE" .
echo "container-smoke: built $IMAGE in $(($(date +%s) - start)) s"
$podman_cmd image inspect "$IMAGE" --format 'size {{.Size}} bytes, user {{.Config.User}}'

VENV="${VENV:-.venv}"
make "$VENV/.installed" >/dev/null
TOKENRELAY_CONTAINER_IMAGE="$IMAGE" PODMAN="$podman_cmd" PODMAN_RUN_ARGS="$run_args" \
    "$VENV/bin/pytest" tests/test_container_smoke.py -v -s -p no:randomly "$@"

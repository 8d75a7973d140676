#!/usr/bin/env bash
# A Debian base image with python3 made by debootstrap, for machines that reach no image
# registry: `podman build --build-arg BASE=localhost/debian-python:12 .`
# It uses the mirror apt already uses (the first URIs/deb line of /etc/apt/sources.list*).
# Needs root, debootstrap and podman. Does nothing when the image exists.
set -euo pipefail
IMAGE="${1:-localhost/debian-python:12}"
SUITE="${SUITE:-bookworm}"
if podman image exists "$IMAGE"; then
    echo "container-base: $IMAGE exists"
    exit 0
fi
mirror="$(grep -rhoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | awk '{print $2}')"
if [ -z "$mirror" ]; then
    mirror="$(grep -rhoE '^deb +[^ ]+/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -1 | awk '{print $2}')"
fi
: "${mirror:?container-base: no Debian mirror found in /etc/apt/sources.list*}"
root="$(mktemp -d /var/tmp/tokenrelay-base.XXXXXX)"
trap 'rm -rf "$root"' EXIT
echo "container-base: debootstrap $SUITE from $mirror"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates "$SUITE" "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* \
    "$root"/usr/share/man/* "$root"/usr/share/locale/*
tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$IMAGE"

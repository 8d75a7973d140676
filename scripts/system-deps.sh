#!/usr/bin/env bash
# Install the Debian packages the test suite needs, only those that are missing.
# The tests start the services themselves, on loopback and free ports.
set -euo pipefail
need=()
# The packages come as arguments from the Makefile's system-deps target.
for pkg in "$@"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"

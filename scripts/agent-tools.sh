#!/usr/bin/env bash
# Install the coding agents the end-to-end tests run, pinned, into .tools/ (gitignored),
# only when the pinned version is missing. Called by the Makefile's agent-tools target.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools"
# name@version pairs; the tests find the binaries under .tools/node_modules/.bin/.
for spec in "$@"; do
  name="${spec%@*}"
  version="${spec##*@}"
  pkg_json="$prefix/node_modules/$name/package.json"
  if [ -f "$pkg_json" ] && grep -q "\"version\": \"$version\"" "$pkg_json"; then
    continue
  fi
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error "$spec"
done

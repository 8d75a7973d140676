#!/usr/bin/env bash
# Install the coding agents the end-to-end tests run, pinned, into .tools/ (gitignored),
# only when a pinned version is missing. Called by the Makefile's agent-tools target.
# All specs go to one npm call: `npm install --no-save` prunes packages it was not
# given, so installing them one by one would remove the agent installed before.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
prefix="$root/.tools"
# name@version pairs; the tests find the binaries under .tools/node_modules/.bin/.
missing=0
for spec in "$@"; do
  name="${spec%@*}"
  version="${spec##*@}"
  pkg_json="$prefix/node_modules/$name/package.json"
  if ! { [ -f "$pkg_json" ] && grep -q "\"version\": \"$version\"" "$pkg_json"; }; then
    missing=1
  fi
done
if [ "$missing" = 1 ]; then
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error "$@"
fi

#!/usr/bin/env bash
# Vendor the charting library of the /admin dashboard: uPlot (MIT, by Leon Sorokin),
# https://github.com/leeoniya/uPlot. The gateway serves every asset from its own
# package (no CDN), so the library's distributed files are copied into
# src/tokenrelay/web/vendor/uplot/ and committed, together with its licence.
#
# Reproducible: one exact version, fetched with `npm pack` from the npm registry and
# checked against the pinned integrity (the registry's sha512 of that tarball) before
# anything is copied. To upgrade, change VERSION and INTEGRITY (`npm view
# uplot@<version> dist.integrity`), run this script, and look at the dashboard.
#
# Usage: scripts/vendor-charts.sh        (needs npm; writes only the vendor folder)
set -euo pipefail

NAME=uplot
VERSION=1.6.32
INTEGRITY=sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw==
FILES=(dist/uPlot.iife.min.js dist/uPlot.min.css LICENSE)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/src/tokenrelay/web/vendor/uplot"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "npm is needed (Debian package: npm)" >&2; exit 2; }

(cd "$work" && npm pack --silent --json "$NAME@$VERSION" >pack.json)
got="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["integrity"])' "$work/pack.json")"
tarball="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[0]["filename"])' "$work/pack.json")"
if [ "$got" != "$INTEGRITY" ]; then
  echo "integrity mismatch for $NAME@$VERSION:" >&2
  echo "  expected $INTEGRITY" >&2
  echo "  got      $got" >&2
  exit 1
fi
# The same check, computed here rather than trusted from npm's report.
computed="sha512-$(openssl dgst -sha512 -binary "$work/$tarball" | base64 -w0)"
if [ "$computed" != "$INTEGRITY" ]; then
  echo "the tarball's sha512 is $computed, not the pinned $INTEGRITY" >&2
  exit 1
fi

tar -xzf "$work/$tarball" -C "$work"
rm -rf "$dest"
mkdir -p "$dest"
for file in "${FILES[@]}"; do
  cp "$work/package/$file" "$dest/$(basename "$file")"
done
echo "vendored $NAME@$VERSION into ${dest#"$root"/}:"
(cd "$dest" && sha256sum -- *)

#!/usr/bin/env bash
# Re-fetches the console's one third-party file set, uPlot (MIT), at a pinned
# version from the npm registry and copies its minified IIFE build, its CSS
# and its licence into vendor/. The files are committed: building qroute
# needs neither npm nor the network.
#
#   crates/qroute-gateway/ui/vendor.sh [VERSION]
set -euo pipefail
VERSION="${1:-1.6.32}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
(cd "$TMP" && npm pack --silent "uplot@$VERSION" >/dev/null && tar xzf "uplot-$VERSION.tgz")
mkdir -p "$HERE/vendor"
cp "$TMP/package/dist/uPlot.iife.min.js" "$HERE/vendor/uPlot.iife.min.js"
cp "$TMP/package/dist/uPlot.min.css" "$HERE/vendor/uPlot.min.css"
cp "$TMP/package/LICENSE" "$HERE/vendor/uPlot.LICENSE"
echo "$VERSION" >"$HERE/vendor/uPlot.VERSION"
echo "uPlot $VERSION copied into $HERE/vendor"

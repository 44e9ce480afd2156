#!/usr/bin/env bash
# Copies the charting library from node_modules (installed by `npm ci` from package-lock.json)
# into src/vendor, where the server embeds it. The browser tests check the copies are these.
set -euo pipefail
cd "$(dirname "$0")"
[ -d node_modules/uplot ] || npm ci --no-audit --no-fund >&2
for f in uPlot.iife.min.js uPlot.min.css; do
  cp node_modules/uplot/dist/$f src/vendor/$f
done
cp node_modules/uplot/LICENSE src/vendor/uPlot.LICENSE

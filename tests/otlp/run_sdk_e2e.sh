#!/bin/sh
# run_sdk_e2e.sh TELEMETRYD_BIN WORK_DIR: installs the pinned OpenTelemetry JavaScript
# SDK (package-lock.json beside this script) with `npm ci` into WORK_DIR, once per
# lockfile (a marker names its hash), then runs sdk_e2e.mjs against TELEMETRYD_BIN.
# Exits 77 (skipped) when node or npm is missing or npm cannot reach its registry.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=$1
work=$2
skip() { echo "SKIPPED: $*"; exit 77; }
command -v node >/dev/null 2>&1 || skip "node is not installed"
command -v npm >/dev/null 2>&1 || skip "npm is not installed"
hash=$(sha256sum "$here/package-lock.json" | cut -c1-16)
if [ ! -f "$work/installed-$hash" ]; then
  rm -rf "$work"
  mkdir -p "$work"
  cp "$here/package.json" "$here/package-lock.json" "$work/"
  if ! (cd "$work" && timeout 180 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error); then
    (cd "$work" && timeout 30 npm ping >/dev/null 2>&1) || skip "npm cannot reach its registry"
    echo "npm ci failed although the registry answers"
    exit 1
  fi
  touch "$work/installed-$hash"
fi
cp "$here/sdk_e2e.mjs" "$work/"
exec node "$work/sdk_e2e.mjs" "$bin"

#!/usr/bin/env bash
# tests/ops/check_layers_test.sh SOURCE_DIR: scripts/check-layers passes on the tree as
# it is, and fails, naming the file, on each of a few wrong includes planted in a
# temporary copy of the components (never in the tree itself).
set -euo pipefail
SRC=${1:?usage: check_layers_test.sh SOURCE_DIR}
CHECK="$SRC/scripts/check-layers"
TMP=$(mktemp -d /tmp/tdlayers.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

"$CHECK" "$SRC" >/dev/null || { echo "FAIL: check-layers refuses the tree itself"; "$CHECK" "$SRC"; exit 1; }

# plant FILE INCLUDE: a fresh copy with one wrong include appended to FILE; check-layers
# must fail and name FILE.
plant() {
  local file=$1 include=$2 copy="$TMP/copy" out
  rm -rf "$copy" && mkdir -p "$copy"
  cp -r "$SRC"/{shm,common,ingest,state,cluster,server} "$copy"/
  echo "#include \"$include\"" >>"$copy/$file"
  if out=$("$CHECK" "$copy" 2>&1); then
    echo "FAIL: check-layers passed with $include planted in $file"
    exit 1
  fi
  grep -q "^$file:[0-9]*: includes \"$include\"" <<<"$out" || {
    echo "FAIL: check-layers failed without naming $file:"; echo "$out"; exit 1; }
  echo "ok: $include in $file is refused"
}

plant shm/store.cc common/log.h             # shm includes nothing of ours
plant common/log.cc shm/shm.h               # nor does common
plant ingest/window/aggregator.cc server/config.h
plant ingest/format/parser.cc cluster/cluster.h
plant state/dir.cc ingest/ingest.h         # state includes shm and common
plant cluster/lease.cc ingest/ingest.h      # cluster includes common only
plant cluster/node_impl.h server/service.h
echo "PASS"

# scripts/deps.sh: the Debian packages telemetryd needs, installed when missing.
# Sourced by scripts/run and scripts/test; safe to run again (installs nothing twice).

TELEMETRYD_PACKAGES=(
  build-essential cmake pkg-config ccache
  libevent-dev liburing-dev libsimdjson-dev libfmt-dev libboost-dev
  libtomlplusplus-dev libcli11-dev
  catch2 spin curl python3 wrk
  chromium chromium-driver prometheus-node-exporter prometheus
  libprotobuf-dev protobuf-compiler zlib1g-dev
  libhiredis-dev libzstd-dev redis-server redis-sentinel redis-tools faketime
)

ensure_packages() {
  local missing=() p wanted=("${TELEMETRYD_PACKAGES[@]}" "$@")
  # node and npm drive the OpenTelemetry JavaScript SDK's end-to-end test: Debian's,
  # unless the machine has an npm already (a newer node from elsewhere brings its own,
  # which Debian's npm package would conflict with).
  command -v npm >/dev/null 2>&1 || wanted+=(nodejs npm)
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  # Packages with a service (prometheus, node_exporter, redis) would start it on install; a
  # policy-rc.d that says no keeps them stopped. Ours only if there was none, and
  # removed again afterwards; the tests start what they need themselves.
  local policy=/usr/sbin/policy-rc.d made_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    made_policy=1
  fi
  local rc=0
  $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    rc=$?
  [ -n "$made_policy" ] && $sudo rm -f "$policy"
  return $rc
}

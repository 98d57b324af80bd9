# scripts/deps.sh: the Debian packages telemetryd needs, installed when missing.
# Sourced by scripts/run and scripts/test; safe to run again (installs nothing twice).

TELEMETRYD_PACKAGES=(
  build-essential cmake pkg-config
  libevent-dev libsimdjson-dev libfmt-dev
  libtomlplusplus-dev libcli11-dev
  catch2 spin curl python3 wrk
  chromium chromium-driver
)

ensure_packages() {
  local missing=() p
  for p in "${TELEMETRYD_PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

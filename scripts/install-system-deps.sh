#!/usr/bin/env bash
# Install the Debian/Ubuntu packages the testbed needs, only those that are missing.
# Idempotent and fast when everything is present. Run as root.
set -euo pipefail

# command -> package that provides it
declare -A NEED=(
  [mnexec]=mininet
  [iperf3]=iperf3
  [ping]=iputils-ping
  [brctl]=bridge-utils
  [ethtool]=ethtool
  [tcpdump]=tcpdump
  [tc]=iproute2
  [ip]=iproute2
  [pkill]=procps
  [pgrep]=procps
  [unshare]=util-linux
  [chrt]=util-linux
  [killall]=psmisc
  [openssl]=openssl
)
[ "${WITH_BROWSER:-0}" = 1 ] && NEED[chromium]=chromium

missing=()
for cmd in "${!NEED[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${NEED[$cmd]}")
done
# A virtualenv needs ensurepip, which Debian ships separately.
if ! "${PYTHON:-python3}" -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing packages ${pkgs[*]}; run as root (sudo make ...)" >&2
  exit 1
fi
echo "install-system-deps: installing ${pkgs[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends: mininet recommends openvswitch-switch, which we do not use.
apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null

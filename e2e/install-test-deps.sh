#!/usr/bin/env bash
# Installs the Debian packages the network-namespace tests (tier 3) need before `cargo test`
# runs them: `ip` (iproute2), `iptables` (nft and legacy back ends), `setpriv`/`nsenter`
# (util-linux) and `pgrep` (procps); and nginx, the known proxy the benchmarks compare with
# (e2e/bench), whose smoke run is part of the tests. Tier 4's own packages are installed by
# build-control-plane.sh. A no-op when everything is present.
#
# Usage (as root): e2e/install-test-deps.sh
set -euo pipefail

packages=(iproute2 iptables util-linux procps nginx)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    echo "[install-test-deps] present: ${packages[*]}"
    exit 0
fi
[[ $EUID -eq 0 ]] || { echo "[install-test-deps] ERROR: run as root to install: ${missing[*]}" >&2; exit 1; }
echo "[install-test-deps] installing: ${missing[*]}"
apt-get update -q
# policy-rc.d keeps nginx's postinst from starting a system nginx on port 80: the benchmarks
# start their own instances.
printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
chmod +x /usr/sbin/policy-rc.d
trap 'rm -f /usr/sbin/policy-rc.d' EXIT
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"

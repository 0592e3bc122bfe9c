#!/usr/bin/env bash
# Installs what building, testing, the demo and the benchmarks need (Debian 12).
# Idempotent: installs only when something is missing.
set -euo pipefail

# postgresql-15 carries the contrib modules (postgresql-contrib-15 is only a virtual name)
PKGS=(postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev
      libssl-dev postgresql-15-cron postgresql-15-pgtap libipc-run-perl
      nginx-light wrk python3 make gcc)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "missing packages: ${missing[*]} (run as root to install them)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

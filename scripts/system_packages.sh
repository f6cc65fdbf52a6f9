#!/usr/bin/env bash
# Install the Debian packages listed in scripts/system-packages.txt that are missing.
# Runs apt-get only when something is missing; needs root (CI runs as root). Without root it
# says what is missing and the tests that need it fail with that name in their message.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
while read -r pkg probe _; do
  [ -z "$pkg" ] || [ "${pkg#\#}" != "$pkg" ] && continue
  command -v "$probe" >/dev/null 2>&1 || missing+=("$pkg")
done < scripts/system-packages.txt
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "system_packages: missing ${missing[*]} (not root: install them with apt-get)" >&2
  exit 0
fi
echo "system_packages: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

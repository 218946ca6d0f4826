#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages sealpost needs, and only those that are missing.
#   scripts/deps.sh build   - what building sealpost needs
#   scripts/deps.sh test    - that, plus the real servers and clients the tests start
set -euo pipefail

build_pkgs=(pkg-config libclang-dev nettle-dev libgmp-dev libsqlite3-dev make gcc)
test_pkgs=(gnupg sq swaks isync python3 python3-aiosmtpd dovecot-imapd curl openssl)

case "${1:-build}" in
  build) wanted=("${build_pkgs[@]}") ;;
  test) wanted=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

echo "installing: ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The packaged Dovecot service is not used: the tests start their own instances.
if [ -d /run/systemd/system ] && printf '%s\n' "${missing[@]}" | grep -qx dovecot-imapd; then
  $sudo systemctl disable --now dovecot >/dev/null 2>&1 || true
fi

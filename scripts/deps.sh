#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages sealpost needs, and only those that are missing.
#   scripts/deps.sh build   - what building sealpost needs
#   scripts/deps.sh test    - that, plus the real servers and clients the tests start
#   scripts/deps.sh interop - that, plus sq 1.x built from crates.io (make test-interop)
# Packages are installed without Recommends, so every package a tool needs for what the
# tests ask of it is named here (swaks speaks TLS only with libnet-ssleay-perl, a Recommends).
set -euo pipefail

# Sequoia's OpenSSL backend links libssl (openssl-sys, whose bindings bindgen makes
# with libclang); the key store links SQLite.
build_pkgs=(pkg-config libclang-dev libssl-dev libsqlite3-dev make gcc)
test_pkgs=(gnupg gpg-agent sq swaks libnet-ssleay-perl isync python3 python3-aiosmtpd
  dovecot-core dovecot-imapd curl openssl ca-certificates procps systemd postgresql
  util-linux haproxy offlineimap3 getmail6 fetchmail postfix cyrus-common sasl2-bin)
# postgresql: tests/state.rs starts its own server (initdb, postgres; the client library is
# pure Rust); util-linux's setpriv runs it as the package's postgres user when root.
# systemd: systemd-analyze rates and verifies the units in systemd/ (tests/systemd.rs);
# a minbase Debian has no systemd, and nothing here starts it.
# offlineimap3, getmail6, fetchmail: tests/clients.rs pulls a mailbox with each, through
# sealpost and directly; offlineimap3 depends on python3-imaplib2 and python3-distro
# (Depends, installed with it), fetchmail's one Recommends (ca-certificates) is named above.
# None of them starts a service (Debian's fetchmail daemon stays off: START_DAEMON=no).
# postfix: tests/smtp_postfix.rs starts its own as the provider's submission server (SASL
# through the test Dovecot's auth socket, so no Cyrus SASL packages); installed with "No
# configuration" (preseeded below), so the packaged instance has no main.cf and never runs.
# cyrus-common, sasl2-bin: Cyrus IMAP as a second upstream (tests/imap_proxy.rs): its
# master, database tools and SASL password tool. Cyrus's imapd itself is in cyrus-imapd,
# which conflicts with dovecot-imapd (both provide imap-server), so it is unpacked below
# into a folder of its own instead of installed.
# haproxy: the README's load-balancer guide runs in front of two instances (tests/haproxy.rs);
# the tests start their own, and the packaged service is stopped below.
# sequoia-sq 1.x builds with Sequoia's default backend (nettle), links OpenSSL and
# compiles Cap'n Proto schemas.
interop_pkgs=(nettle-dev libgmp-dev capnproto)

mode="${1:-build}"
case "$mode" in
  build) wanted=("${build_pkgs[@]}") ;;
  test) wanted=("${build_pkgs[@]}" "${test_pkgs[@]}") ;;
  interop) wanted=("${build_pkgs[@]}" "${test_pkgs[@]}" "${interop_pkgs[@]}") ;;
  *) echo "usage: $0 build|test|interop" >&2; exit 2 ;;
esac

missing=()
for p in "${wanted[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  sudo="sudo"
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  if printf '%s\n' "${missing[@]}" | grep -qx postfix; then
    echo "postfix postfix/main_mailer_type select No configuration" | $sudo debconf-set-selections
  fi
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # The packaged Dovecot, HAProxy, PostgreSQL, Postfix and Cyrus services are not used: the tests start
  # their own instances on free ports.
  for unit in dovecot-imapd:dovecot haproxy:haproxy postgresql:postgresql postfix:postfix \
    cyrus-common:cyrus-imapd; do
    if [ -d /run/systemd/system ] && printf '%s\n' "${missing[@]}" | grep -qx "${unit%%:*}"; then
      $sudo systemctl disable --now "${unit#*:}" >/dev/null 2>&1 || true
    fi
  done
fi

# Cyrus's imapd, from the cyrus-imapd package of the same version as cyrus-common, unpacked
# (not installed: it would remove dovecot-imapd) where tests/common/cyrus.rs looks for it.
CYRUS_ROOT=/opt/sealpost-test/cyrus-imapd
if [ "$mode" != build ]; then
  cyrus_version="$(dpkg-query -W -f='${Version}' cyrus-common)"
  if [ "$(cat "$CYRUS_ROOT/VERSION" 2>/dev/null)" != "$cyrus_version" ]; then
    echo "unpacking cyrus-imapd $cyrus_version into $CYRUS_ROOT" >&2
    dl="$(mktemp -d)"
    chmod 755 "$dl" # apt's download user writes here
    (cd "$dl" && $sudo apt-get download -qq "cyrus-imapd=$cyrus_version" >/dev/null 2>&1 ||
      { $sudo apt-get update -qq && $sudo apt-get download -qq "cyrus-imapd=$cyrus_version"; })
    $sudo rm -rf "$CYRUS_ROOT"
    $sudo mkdir -p "$CYRUS_ROOT"
    $sudo dpkg-deb -x "$dl"/cyrus-imapd_*.deb "$CYRUS_ROOT"
    echo "$cyrus_version" | $sudo tee "$CYRUS_ROOT/VERSION" >/dev/null
    $sudo rm -rf "$dl"
  fi
fi

# Debian's sq (0.27) predates the shared certificate directory, so the key-store
# interoperability test (make test-interop) uses sq 1.x from crates.io, built once into its own folder
# (it must not shadow Debian's sq, whose command line other tests use).
SQ1_ROOT=/opt/sealpost-test/sq
SQ1_VERSION=1.5.0
if [ "$mode" = interop ] && ! "$SQ1_ROOT/bin/sq" version 2>&1 | grep -q "^sq $SQ1_VERSION"; then
  echo "building sq $SQ1_VERSION into $SQ1_ROOT (once; several minutes)" >&2
  $sudo mkdir -p "$SQ1_ROOT"
  $sudo env PATH="$PATH" CARGO_TARGET_DIR="${TMPDIR:-/tmp}/sealpost-sq-build" \
    cargo install --locked --force --quiet "sequoia-sq@$SQ1_VERSION" --root "$SQ1_ROOT"
fi

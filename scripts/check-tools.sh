#!/usr/bin/env bash
# Asks every tool the tests drive for the capability the tests need from it, and names the
# Debian package that provides what is missing. A package being installed is not enough:
# swaks without libnet-ssleay-perl, for one, runs but cannot speak TLS.
#   scripts/check-tools.sh test      - the tools `make test` drives
#   scripts/check-tools.sh interop   - that, plus sq 1.x for `make test-interop`
set -uo pipefail

SQ1="${SEALPOST_SQ1:-/opt/sealpost-test/sq/bin/sq}"
failed=0
need() { # need DESCRIPTION FIX COMMAND...  (FIX: a Debian package, or what to run)
  local what="$1" fix="$2"
  shift 2
  if "$@" >/dev/null 2>&1; then
    echo "ok      $what"
  else
    case "$fix" in
      *" "*) echo "MISSING $what: $fix" >&2 ;;
      *) echo "MISSING $what: install the Debian package $fix (scripts/deps.sh test does)" >&2 ;;
    esac
    failed=1
  fi
}
has_line() { # has_line PATTERN COMMAND... : COMMAND's output has a line matching PATTERN
  local pattern="$1"
  shift
  local out
  out="$("$@" 2>&1)" || true
  grep -Eq "$pattern" <<<"$out"
}

need "swaks (SMTP client)" swaks command -v swaks
need "swaks with TLS/STARTTLS (Net::SSLeay)" libnet-ssleay-perl has_line '^=== TLS supported' swaks --support
need "swaks with AUTH PLAIN/LOGIN" swaks has_line '^=== Basic AUTH supported' swaks --support
need "curl with IMAP over TLS" curl has_line '^Protocols:.* imaps( |$)' curl -V
need "curl with SMTP over TLS" curl has_line '^Protocols:.* smtps( |$)' curl -V
need "mbsync (isync) with TLS" isync has_line 'libssl' ldd "$(command -v mbsync || echo /nonexistent)"
need "offlineimap3 (pulls a mailbox into a Maildir)" offlineimap3 has_line '^[0-9]' offlineimap --version
need "getmail6 with IMAP over TLS" getmail6 /usr/bin/python3 -c "import getmailcore.retrievers as r, ssl; r.SimpleIMAPSSLRetriever"
need "fetchmail with TLS" fetchmail has_line '^This is fetchmail release .*SSL' fetchmail --version
need "haproxy 2.x (send-proxy-v2, tcp-check)" haproxy has_line '^HAProxy version 2\.' haproxy -v
need "gpg" gnupg has_line '^gpg \(GnuPG\) 2\.' gpg --version
need "gpg-agent (secret keys)" gpg-agent has_line '^gpg-agent:' gpgconf --list-components
need "sq 0.27 (Debian's, for sq encrypt/decrypt)" sq has_line '^sq 0\.' sq --version
need "openssl (test CA)" openssl has_line '^OpenSSL 3' openssl version
need "python3 with aiosmtpd (SMTP upstream)" python3-aiosmtpd /usr/bin/python3 -c "import aiosmtpd.controller, ssl"
need "Dovecot IMAP server" dovecot-imapd test -x /usr/lib/dovecot/imap
need "Dovecot master" dovecot-core has_line '^2\.' dovecot --version
need "Cyrus IMAP master and SASL database tool" "cyrus-common sasl2-bin (scripts/deps.sh test installs them)" \
  test -x /usr/sbin/cyrmaster -a -x /usr/sbin/saslpasswd2
need "Cyrus imapd (unpacked from cyrus-imapd)" "scripts/deps.sh test (it unpacks it)" \
  test -x "${SEALPOST_CYRUS_IMAPD:-/opt/sealpost-test/cyrus-imapd/usr/lib/cyrus/bin/imapd}"
need "Postfix with Dovecot SASL (SMTP upstream)" postfix has_line '^dovecot$' /usr/sbin/postconf -a
need "systemd-analyze with offline security ratings (systemd units)" systemd \
  has_line 'Overall exposure level' systemd-analyze security --offline=yes /lib/systemd/system/systemd-journald.service
# The tests stop servers and sealpost with kill(1) and pkill (not the shell builtin).
need "kill and pkill (signals to test servers)" procps test -x /usr/bin/pkill -a -x /bin/kill

if [ "${1:-test}" = interop ]; then
  need "sq 1.x with a certificate store ($SQ1)" "run scripts/deps.sh interop (it builds sequoia-sq 1.x once)" \
    has_line '^sq 1\.' "$SQ1" version
fi

if [ "$failed" -ne 0 ]; then
  echo "some test tools are missing or lack a capability the tests use (see above)" >&2
  exit 1
fi

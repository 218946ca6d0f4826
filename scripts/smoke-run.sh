#!/usr/bin/env bash
# The README's run command, as a newcomer types it: `make run CONFIG=sealpost.toml` with a
# config on loopback ports (no identity, an upstream that need not answer). Passes when it
# builds, listens on every configured port, and exits 0 on SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="$(mktemp -d /tmp/sealpost-smoke.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
smtp="$(port)"; imap="$(port)"
cat >"$dir/sealpost.toml" <<TOML
state_dir = "$dir/state"
[[account]]
name = "smoke"
[account.smtp]
listen = "127.0.0.1:$smtp"
upstream = "127.0.0.1:9"
upstream_security = "plain"
[account.imap]
listen = "127.0.0.1:$imap"
upstream = "127.0.0.1:9"
upstream_security = "plain"
TOML
make run CONFIG="$dir/sealpost.toml" >"$dir/run.log" 2>&1 &
make_pid=$!
deadline=$((SECONDS + 1200))   # includes the release build on a fresh machine
for p in "$smtp" "$imap"; do
  until (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do
    if ! kill -0 "$make_pid" 2>/dev/null || [ $SECONDS -gt $deadline ]; then
      echo "smoke-run: make run did not listen on 127.0.0.1:$p" >&2
      cat "$dir/run.log" >&2
      exit 1
    fi
    sleep 1
  done
done
pkill -TERM -f "sealpost run --config $dir/sealpost.toml"
if wait "$make_pid"; then
  echo "smoke-run: make run built, listened on $smtp and $imap, and stopped cleanly"
else
  echo "smoke-run: make run exited non-zero after SIGTERM" >&2
  cat "$dir/run.log" >&2
  exit 1
fi

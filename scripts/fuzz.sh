#!/usr/bin/env bash
# The fuzz targets of fuzz/ (cargo-fuzz, libFuzzer; see fuzz/README.md).
#
#   scripts/fuzz.sh smoke            build every target, run each for 5 s (CI)
#   scripts/fuzz.sh long [TARGET...] run each target for 10 million executions
#                                    (FUZZ_RUNS=N to change, FUZZ_SECONDS=S to stop sooner)
#   scripts/fuzz.sh run TARGET [libFuzzer flags...]
#   scripts/fuzz.sh build            build every target
#
# Built on the nightly toolchain (libFuzzer's instrumentation needs it; the product
# itself stays on stable), without a sanitizer (sealpost forbids unsafe code) but with
# debug assertions and overflow checks. Every build and run is niced (FUZZ_NICE=N, 19
# by default) so a shared machine stays usable. A working corpus is kept per target in
# fuzz/target/corpus/<target>; the committed seeds in fuzz/corpus/<target> are read too.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
NICE=(nice -n "${FUZZ_NICE:-19}")
FLAGS=(-s none -a)

ensure_tools() {
  if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
    echo "fuzz: the $TOOLCHAIN toolchain is missing (rustup toolchain install $TOOLCHAIN)" >&2
    exit 1
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz" >&2
    "${NICE[@]}" cargo install --locked cargo-fuzz
  fi
}

targets() {
  sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^sealpost-fuzz$'
}

build() {
  (cd fuzz && "${NICE[@]}" cargo "+$TOOLCHAIN" fuzz build "${FLAGS[@]}")
}

# run TARGET LOG [libFuzzer flags...]: runs one target over its corpora.
run() {
  local target=$1 log=$2
  shift 2
  mkdir -p "fuzz/target/corpus/$target" "fuzz/corpus/$target"
  (cd fuzz && "${NICE[@]}" cargo "+$TOOLCHAIN" fuzz run "${FLAGS[@]}" "$target" \
    "target/corpus/$target" "corpus/$target" -- -rss_limit_mb=4096 "$@") 2>&1 | tee "$log" |
    grep -E '^(Done|==[0-9]+== ERROR|SUMMARY|thread .* panicked|artifact_prefix|Test unit written)' || true
  # libFuzzer's last line: "Done N runs in S second(s)"; a crash ends without it.
  if ! grep -q '^Done ' "$log"; then
    echo "fuzz: $target failed (log: $log)" >&2
    return 1
  fi
  local runs secs
  runs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\1/p' "$log")
  secs=$(sed -n 's/^Done \([0-9]*\) runs in \([0-9]*\) second.*/\2/p' "$log")
  echo "fuzz: $target: $runs executions in $secs s ($((runs / (secs > 0 ? secs : 1))) /s)"
}

mode=${1:-smoke}
shift || true
logs=fuzz/target/logs
case "$mode" in
  build)
    ensure_tools
    build
    ;;
  smoke)
    start=$(date +%s)
    if ! rustup run "$TOOLCHAIN" rustc --version >/dev/null 2>&1; then
      # The product builds on stable; only the fuzz targets need nightly. A machine
      # without it skips the smoke loudly rather than failing everything else.
      echo "fuzz: WARNING: no $TOOLCHAIN toolchain here; fuzz smoke skipped" >&2
      exit 0
    fi
    ensure_tools
    build
    mkdir -p "$logs"
    failed=0
    for t in $(targets); do
      run "$t" "$logs/$t.smoke.log" -max_total_time=5 || failed=1
    done
    echo "fuzz: smoke done in $(($(date +%s) - start)) s"
    exit $failed
    ;;
  long)
    ensure_tools
    build
    mkdir -p "$logs"
    failed=0
    extra=()
    [ -n "${FUZZ_SECONDS:-}" ] && extra+=("-max_total_time=$FUZZ_SECONDS")
    for t in ${@:-$(targets)}; do
      run "$t" "$logs/$t.long.log" "-runs=${FUZZ_RUNS:-10000000}" "${extra[@]}" || failed=1
    done
    exit $failed
    ;;
  run)
    ensure_tools
    target=${1:?"usage: scripts/fuzz.sh run TARGET [libFuzzer flags]"}
    shift
    mkdir -p "$logs"
    run "$target" "$logs/$target.log" "$@"
    ;;
  *)
    echo "usage: scripts/fuzz.sh smoke | long [TARGET...] | run TARGET [flags] | build" >&2
    exit 2
    ;;
esac

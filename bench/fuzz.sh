#!/usr/bin/env bash
# Run every fuzz target (fuzz/) for a fixed time and print executions and
# crashes as a Markdown table for BENCHMARKS.md. Scheduled, not part of
# CI's default run. Needs cargo-fuzz (`cargo install cargo-fuzz`); the
# sanitizer flags need nightly features, which RUSTC_BOOTSTRAP=1 allows
# on this machine's stable toolchain.
#
#   FUZZ_SECONDS=60 bash bench/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECS=${FUZZ_SECONDS:-60}
export RUSTC_BOOTSTRAP=1
cargo fuzz build -O >/dev/null
echo "| target | seconds | executions | exec/s | crashes |"
echo "|---|---|---|---|---|"
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  [ -d "seeds/$t" ] && cp -n seeds/"$t"/* "corpus/$t/" 2>/dev/null || true
  log=$(mktemp)
  status=0
  cargo fuzz run -O "$t" "corpus/$t" -- -max_total_time="$SECS" -print_final_stats=1 >"$log" 2>&1 || status=$?
  runs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)
  crashes=0
  if [ "$status" -ne 0 ]; then
    crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
    grep -m1 -E "panicked|ERROR: libFuzzer" "$log" >&2 || true
  fi
  printf '| %s | %s | %s | %s | %s |\n' "$t" "$SECS" "${runs:-?}" "$(( ${runs:-0} / SECS ))" "$crashes"
  rm -f "$log"
done

#!/usr/bin/env bash
# Messages per second accepted on the mx listener, durable queue, from
# Postfix's smtp-source, side by side with Postfix itself on the same
# machine and disk. Prints a Markdown table; run from the repository root:
#
#   bash bench/throughput.sh            # 20 sessions, 20000 messages, 1 KiB
#   ROUNDS=3 MESSAGES=5000 bash bench/throughput.sh
#   BASELINE_BIN=/path/to/older/portcullis bash bench/throughput.sh
#                                       # an older build too, in the same rounds
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
SESSIONS=${SESSIONS:-20} MESSAGES=${MESSAGES:-20000} SIZE=${SIZE:-1024} ROUNDS=${ROUNDS:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
bash .ci/build-release -q
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-bench.XXXXXX)
chmod 755 "$work"  # Postfix daemons run as the postfix user
PC_PORT=3525 PF_PORT=3526 DNS_PORT=3553
pc_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT

start_portcullis() {
  rm -rf "$work/pc"
  # recipients = "any", like Postfix's static virtual_mailbox_maps below.
  speed_config "$work/pc" "$PC_PORT" "127.0.0.1:$DNS_PORT"
  "${1:-$BIN}" serve --config "$work/pc/portcullis.toml" >"$work/pc/log" 2>&1 &
  pc_pid=$!
  wait_port "$PC_PORT" || exit 1
}


# Run smtp-source against PORT; print messages/s (accepted = smtp-source done).
blast() {
  local port=$1 t0 t1
  t0=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@remote.test -t u@bench.test "127.0.0.1:$port"
  t1=$(date +%s.%N)
  echo "$MESSAGES / ($t1 - $t0)" | bc -l
}


bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT"
bash bench/postfix_instance.sh start "$work/postfix" "$PF_PORT" >/dev/null
sleep 1
pc_rates=() pf_rates=() base_rates=()
# One round of portcullis: the build given (default $BIN); prints msg/s.
portcullis_round() {
  start_portcullis "${1:-}" >&2
  blast $PC_PORT
  wait_delivered "$work/pc/data/mail/bench.test/u/new" "$MESSAGES" >&2
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""
}
for round in $(seq "$ROUNDS"); do
  pc_rates+=("$(portcullis_round)")
  [ -n "${BASELINE_BIN:-}" ] && base_rates+=("$(portcullis_round "$BASELINE_BIN")")
  before=$(count_files "$work/postfix/mail")
  pf_rates+=("$(blast $PF_PORT)")
  wait_delivered "$work/postfix/mail" $((before + MESSAGES))
done

report "${pc_rates[@]}" -- "${pf_rates[@]}"
if [ -n "${BASELINE_BIN:-}" ]; then
  echo
  PEER="baseline build" report "${pc_rates[@]}" -- "${base_rates[@]}"
fi

#!/usr/bin/env bash
# Messages per second accepted on the mx listener, durable queue, from
# Postfix's smtp-source, side by side with Postfix itself on the same
# machine and disk. Prints a Markdown table; run from the repository root:
#
#   bash bench/throughput.sh            # 20 sessions, 20000 messages, 1 KiB
#   ROUNDS=3 MESSAGES=5000 bash bench/throughput.sh
#   BASELINE_BIN=/path/to/older/portcullis bash bench/throughput.sh
#                                       # an older build too, in the same rounds
#   RECORDS='remote IN TXT "v=spf1 ip4:127.0.0.1 -all"' bash bench/throughput.sh
#                                       # zone lines for the sender's domain
#   BASELINE_BIN=... BASELINE_EXTRA=$'[dmarc]\nsend_reports = false' ...
#                                       # config lines for the baseline rounds
#                                       # (the same build with a feature off)
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
  [ -n "${1:-}" ] && printf '%s\n' "${BASELINE_EXTRA:-}" >> "$work/pc/portcullis.toml"
  "${1:-$BIN}" serve --config "$work/pc/portcullis.toml" >"$work/pc/log" 2>&1 &
  pc_pid=$!
  wait_port "$PC_PORT" || exit 1
}


# Run smtp-source against PORT, then wait until DIR holds BEFORE+MESSAGES
# files. Prints two rates: accepted msg/s (smtp-source done: every 250
# received) and delivered msg/s (from the first connection until the last
# message is in its mailbox).
blast() {
  local port=$1 dir=$2 before=$3 t0 t1 t2
  t0=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@remote.test -t u@bench.test "127.0.0.1:$port"
  t1=$(date +%s.%N)
  wait_delivered "$dir" $((before + MESSAGES)) >&2
  t2=$(date +%s.%N)
  echo "$(echo "$MESSAGES / ($t1 - $t0)" | bc -l) $(echo "$MESSAGES / ($t2 - $t0)" | bc -l)"
}


bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT" "${RECORDS:-}"
bash bench/postfix_instance.sh start "$work/postfix" "$PF_PORT" >/dev/null
sleep 1
pc_rates=() pf_rates=() base_rates=() pc_done=() pf_done=() base_done=()
# One round of portcullis: the build given (default $BIN); prints both rates.
portcullis_round() {
  start_portcullis "${1:-}" >&2
  blast $PC_PORT "$work/pc/data/mail/bench.test/u/new" 0
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""
}
for round in $(seq "$ROUNDS"); do
  # With a baseline build, the two take turns going first (the disk and
  # its cache are not the same for the first and the second run).
  if [ -n "${BASELINE_BIN:-}" ] && [ $((round % 2)) = 0 ]; then
    read -r b bd <<<"$(portcullis_round "$BASELINE_BIN")"
    read -r a ad <<<"$(portcullis_round)"
  else
    read -r a ad <<<"$(portcullis_round)"
    [ -n "${BASELINE_BIN:-}" ] && read -r b bd <<<"$(portcullis_round "$BASELINE_BIN")"
  fi
  pc_rates+=("$a") pc_done+=("$ad")
  [ -n "${BASELINE_BIN:-}" ] && base_rates+=("$b") base_done+=("$bd")
  read -r p pd <<<"$(blast $PF_PORT "$work/postfix/mail" "$(count_files "$work/postfix/mail")")"
  pf_rates+=("$p") pf_done+=("$pd")
done

echo "Accepted (every 250 received):"
echo
report "${pc_rates[@]}" -- "${pf_rates[@]}"
echo
echo "Delivered (first connection to last message in its mailbox):"
echo
report "${pc_done[@]}" -- "${pf_done[@]}"
if [ -n "${BASELINE_BIN:-}" ]; then
  echo
  echo "Against the baseline build, accepted:"
  echo
  PEER="baseline build" report "${pc_rates[@]}" -- "${base_rates[@]}"
  echo
  echo "Against the baseline build, delivered:"
  echo
  PEER="baseline build" report "${pc_done[@]}" -- "${base_done[@]}"
fi

#!/usr/bin/env bash
# The paper's scenario (seeds/002, issue 11): an identified sender's
# goodput while an unknown flood rotates through a fresh IPv6 /64 for
# nearly every connection across 2001:db8:1::/48, 200 sessions at once;
# as a ratio to the same sender with no flood, and what the flood got
# through. The same run against Postfix with anvil limits keyed on /64.
# Everything runs in a network namespace this script creates.
#
#   bash bench/cos_flood.sh             # 30 s per phase, 200 flood sessions
#   SECONDS_PER_PHASE=10 bash bench/cos_flood.sh
#   BASELINE_BIN=/path/to/older/portcullis bash bench/cos_flood.sh
#                                       # the same phases with an older build too
set -euo pipefail
cd "$(dirname "$0")/.."
NS=pcflood
if [ "${IN_NETNS:-}" != 1 ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
  [ -n "${SKIP_BUILD:-}" ] || bash .ci/build-release -q
  ip netns del $NS 2>/dev/null || true
  ip netns add $NS
  trap 'ip netns del $NS 2>/dev/null || true' EXIT
  ip -n $NS link set lo up
  # Every address of 2001:db8::/32 is local in the namespace (AnyIP).
  ip -n $NS -6 route add local 2001:db8::/32 dev lo
  ip netns exec $NS sysctl -qw net.ipv6.ip_nonlocal_bind=1
  IN_NETNS=1 ip netns exec $NS bash "$0"
  exit
fi
# shellcheck source=bench/lib.sh
. bench/lib.sh
SECS=${SECONDS_PER_PHASE:-30} FLOOD=${FLOOD:-200}
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-flood.XXXXXX)
chmod 755 "$work"
PC_PORT=4525 PF_PORT=4526 DNS_PORT=4553 HTTP_PORT=4580
pc_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT
bash bench/nsd_instance.sh start "$work/dns" $DNS_PORT 'good IN TXT "v=spf1 ip6:2001:db8:ffff::/64 -all"'

# The same budget on both sides: 10 connections and 60 connections and
# 60 messages a minute. Postfix applies it to each /64; portcullis to
# each range AND to all unknown senders together (the default pool).
cat > "$work/pc.toml" <<CONF
hostname = "mx.bench.test"
data_dir = "$work/pcdata"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[[listener]]
role = "mx"
bind = ["[::1]:$PC_PORT"]
[http]
bind = "127.0.0.1:$HTTP_PORT"
[[domain]]
name = "bench.test"
recipients = "any"
[class.default]
max_connections = 10
connections_per_minute = 600
messages_per_minute = 60
[class.new]
max_connections = 10
connections_per_minute = 60000
messages_per_minute = 60000
recipients_per_minute = 60000
bytes_per_minute = 0
[admission]
per_range_max_connections = 10
per_range_connections_per_minute = 60
CONF

phase() { python3 bench/cos_flood.py --port "$1" --seconds "$SECS" --flood "$FLOOD" ${2:-}; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }

# One portcullis build through both phases: sets alone, flood, rss, state.
run_portcullis() {
  rm -rf "$work/pcdata"
  "$1" serve --config "$work/pc.toml" >"$work/pc.log" 2>&1 &
  pc_pid=$!
  wait_port $HTTP_PORT
  alone=$(phase $PC_PORT --no-flood)
  flood=$(phase $PC_PORT)
  rss=$(awk '/VmRSS/ {print $2}' /proc/$pc_pid/status)
  state=$(curl -s http://127.0.0.1:$HTTP_PORT/metrics | awk '/^portcullis_state_buckets / {print $2}')
  kill $pc_pid; wait $pc_pid 2>/dev/null || true; pc_pid=""
}
run_portcullis "$BIN"
pc_alone=$alone pc_flood=$flood pc_rss=$rss pc_state=$state
if [ -n "${BASELINE_BIN:-}" ]; then
  run_portcullis "$BASELINE_BIN"
  base_alone=$alone base_flood=$flood
fi

PF_ADDR="[::1]" PF_EXTRA="mynetworks = 127.0.0.0/8
smtpd_client_event_limit_exceptions =
smtpd_client_ipv6_prefix_length = 64
anvil_rate_time_unit = 60s
smtpd_client_connection_count_limit = 10
smtpd_client_connection_rate_limit = 60
smtpd_client_message_rate_limit = 60" bash bench/postfix_instance.sh start "$work/postfix" $PF_PORT >/dev/null
sleep 2
pf_alone=$(phase $PF_PORT --no-flood)
pf_flood=$(phase $PF_PORT)
bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true

row() {
  local name=$1 alone=$2 flood=$3
  local a f
  a=$(field "$alone" good_per_s) f=$(field "$flood" good_per_s)
  printf '| %s | %s | %s | %.2f | %s | %s |\n' "$name" "$a" "$f" "$(echo "$f / ($a + 0.000001)" | bc -l)" \
    "$(field "$flood" flood_accepted_per_min)" "$(field "$flood" good_deferred)"
}
echo "Flood: $FLOOD sessions, a fresh /64 of 2001:db8:1::/48 per connection; $SECS s per phase."
echo
echo '| server | good msg/s alone | good msg/s under flood | ratio | flood accepted/min | good sender deferrals |'
echo '|---|---|---|---|---|---|'
row portcullis "$pc_alone" "$pc_flood"
[ -n "${BASELINE_BIN:-}" ] && row "portcullis (baseline build)" "$base_alone" "$base_flood"
row "Postfix (anvil, /64)" "$pf_alone" "$pf_flood"
echo
echo "portcullis after the flood: RSS ${pc_rss} KiB, ${pc_state} rate buckets in state."
echo "raw: portcullis $pc_alone $pc_flood; Postfix $pf_alone $pf_flood"

#!/usr/bin/env bash
# The paper's scenario (seeds/002, issues 11 and 17): an identified
# sender's goodput while an unknown flood rotates through a fresh IPv6 /64
# for nearly every connection across 2001:db8:1::/48, 200 sessions at once;
# as a ratio to the same sender with no flood, and what the flood got
# through. The same run against Postfix with anvil limits keyed on /64 and
# the good sender exempted from them (smtpd_client_event_limit_exceptions,
# the strongest honest Postfix setup for a known sender).
#
# Variants: (a) the flood reconnects at once, with no back-off (churn),
# good sender on one session; (b) each flood connection is held 10 s,
# dribbling a line every 3 s; (c) as (a), but the good sender opens a new
# connection per message. Each flooded once with the flood generator on
# CPU 0 and the server and good sender on CPU 1 (pinned), once unpinned.
# Then portcullis with kernel_blocklist and escalation under the churning
# flood: how many flood connections still complete a handshake.
#
# Everything runs in a network namespace this script creates.
#
#   bash bench/cos_flood.sh             # 20 s per phase, 200 flood sessions
#   SECONDS_PER_PHASE=30 bash bench/cos_flood.sh
#   BASELINE_BIN=/path/to/older/portcullis bash bench/cos_flood.sh
#                                       # variant (a) with an older build too
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
SECS=${SECONDS_PER_PHASE:-20} FLOOD=${FLOOD:-200}
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-flood.XXXXXX)
chmod 755 "$work"
PC_PORT=4525 PF_PORT=4526 DNS_PORT=4553 HTTP_PORT=4580
pc_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true
  bash bench/postfix_instance.sh stop "$work/postfix2" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT
bash bench/nsd_instance.sh start "$work/dns" $DNS_PORT 'good IN TXT "v=spf1 ip6:2001:db8:ffff::/64 -all"'

# The same budget on both sides: 10 connections and 60 connections and
# 60 messages a minute. Postfix applies it to each /64 but the good
# sender's; portcullis to each unidentified range AND to all unknown
# senders together (the default pool); the good sender is served by its
# domain's class.
pc_config() {
  cat <<CONF
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
$1
CONF
}

phase() { python3 bench/cos_flood.py --port "$1" --seconds "$SECS" --flood "$FLOOD" "${@:2}"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])['$2'])" "$1"; }
metric() { curl -s http://127.0.0.1:$HTTP_PORT/metrics | awk -v re="$1" '$0 ~ re {s += $2} END {print s + 0}'; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# Pin PID and its children to CPUS (the server and, for Postfix, its daemons).
pin() {
  local pid=$1 cpus=$2 child
  taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
  for child in $(pgrep -P "$pid" || true); do pin "$child" "$cpus"; done
}
pinned_args=(--flood-cpu 0 --good-cpu 1)

start_portcullis() {
  rm -rf "$work/pcdata"
  pc_config "${2:-}" > "$work/pc.toml"
  "$1" serve --config "$work/pc.toml" >"$work/pc.log" 2>&1 &
  pc_pid=$!
  wait_port $HTTP_PORT || { tail -20 "$work/pc.log" >&2; exit 1; }
}
stop_portcullis() { kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""; }

# One flood phase against portcullis: prints the JSON line with the
# server's CPU per refused connection added.
pc_flood() {
  local t0 r0 out t1 r1
  t0=$(cpu_ticks "$pc_pid") r0=$(metric '^portcullis_connections_total.*outcome="refused_')
  out=$(phase $PC_PORT "$@")
  t1=$(cpu_ticks "$pc_pid") r1=$(metric '^portcullis_connections_total.*outcome="refused_')
  python3 - "$out" "$((t1 - t0))" "$(echo "$r1 - $r0" | bc)" <<'PY'
import json, sys
out, ticks, refused = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
out["server_refusals"] = int(refused)
out["server_cpu_us_per_refusal"] = round(ticks * 10000 / refused, 1) if refused else None
print(json.dumps(out))
PY
}

declare -A R
# portcullis: alone (both good modes), then each variant pinned and not.
run_portcullis() {
  local bin=$1 tag=$2 v mode good pin_mode
  start_portcullis "$bin"
  # The good sender's first message makes its range good.test's.
  phase $PC_PORT --no-flood --good-mode keep >/dev/null
  R[$tag,alone,keep]=$(phase $PC_PORT --no-flood --good-mode keep)
  R[$tag,alone,reconnect]=$(phase $PC_PORT --no-flood --good-mode reconnect)
  for v in a b c; do
    case $v in a) mode=churn good=keep ;; b) mode=dribble good=keep ;; c) mode=churn good=reconnect ;; esac
    [ "$tag" = base ] && [ $v != a ] && continue
    for pin_mode in pinned unpinned; do
      if [ $pin_mode = pinned ]; then pin "$pc_pid" 1; args=("${pinned_args[@]}"); else pin "$pc_pid" 0,1; args=(); fi
      R[$tag,$v,$pin_mode]=$(pc_flood --flood-mode $mode --good-mode $good "${args[@]}")
    done
  done
  pin "$pc_pid" 0,1
  R[$tag,rss]=$(awk '/VmRSS/ {print $2}' /proc/$pc_pid/status)
  R[$tag,buckets]=$(metric '^portcullis_state_buckets ')
  stop_portcullis
}
run_portcullis "$BIN" pc
[ -n "${BASELINE_BIN:-}" ] && run_portcullis "$BASELINE_BIN" base

# Postfix with anvil on /64, the good sender's /64 exempted.
PF_ADDR="[::1]" PF_EXTRA="mynetworks = 127.0.0.0/8
smtpd_client_event_limit_exceptions = [2001:db8:ffff::]/64
smtpd_client_ipv6_prefix_length = 64
anvil_rate_time_unit = 60s
smtpd_client_connection_count_limit = 10
smtpd_client_connection_rate_limit = 60
smtpd_client_message_rate_limit = 60" bash bench/postfix_instance.sh start "$work/postfix" $PF_PORT >/dev/null
wait_port_v6() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/::1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }
wait_port_v6 $PF_PORT
pf_master=$(head -1 "$work/postfix/spool/pid/master.pid" | tr -d ' ')
R[pf,alone,keep]=$(phase $PF_PORT --no-flood --good-mode keep)
R[pf,alone,reconnect]=$(phase $PF_PORT --no-flood --good-mode reconnect)
for v in a b c; do
  case $v in a) mode=churn good=keep ;; b) mode=dribble good=keep ;; c) mode=churn good=reconnect ;; esac
  for pin_mode in pinned unpinned; do
    if [ $pin_mode = pinned ]; then pin "$pf_master" 1; args=("${pinned_args[@]}"); else pin "$pf_master" 0,1; args=(); fi
    R[pf,$v,$pin_mode]=$(phase $PF_PORT --flood-mode $mode --good-mode $good "${args[@]}")
  done
done
bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true

# Postfix with portcullis as its policy service (issue 21): no anvil
# limits; the class of service answers check_policy_service.
POLICY_PORT=4540
start_portcullis "$BIN" "[[listener]]
role = \"policy\"
bind = [\"127.0.0.1:$POLICY_PORT\"]"
policy="check_policy_service inet:127.0.0.1:$POLICY_PORT"
PF_ADDR="[::1]" PF_EXTRA="mynetworks = 127.0.0.0/8
smtpd_delay_reject = no
smtpd_client_restrictions = $policy
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, $policy
smtpd_end_of_data_restrictions = $policy" bash bench/postfix_instance.sh start "$work/postfix2" $PF_PORT >/dev/null
wait_port_v6 $PF_PORT
phase $PF_PORT --no-flood --good-mode keep >/dev/null
R[pfp,alone,keep]=$(phase $PF_PORT --no-flood --good-mode keep)
R[pfp,a,unpinned]=$(phase $PF_PORT --flood-mode churn --good-mode keep)
bash bench/postfix_instance.sh stop "$work/postfix2" >/dev/null 2>&1 || true
stop_portcullis

# portcullis with the blocklist in the kernel and escalation: the churning
# flood, two phases back to back.
start_portcullis "$BIN" "kernel_blocklist = true
escalate_after = 16"
phase $PC_PORT --no-flood --good-mode keep >/dev/null
R[kern,1]=$(pc_flood --flood-mode churn --good-mode keep)
R[kern,2]=$(pc_flood --flood-mode churn --good-mode keep)
R[kern,blocks]=$(curl -s http://127.0.0.1:$HTTP_PORT/metrics | awk '/^portcullis_blocklist_entries / {print $2}')
stop_portcullis

ratio() { echo "$(field "$2" good_per_s) / ($(field "$1" good_per_s) + 0.000001)" | bc -l | xargs printf '%.2f'; }
row() {
  local name=$1 tag=$2 v=$3 pin_mode=$4 good=keep
  [ $v = c ] && good=reconnect
  local alone=${R[$tag,alone,$good]} flood=${R[$tag,$v,$pin_mode]}
  local cpu=n/a
  [ "$tag" = pc ] || [ "$tag" = base ] && cpu=$(field "$flood" server_cpu_us_per_refusal)
  printf '| %s | (%s) %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$v" "$pin_mode" \
    "$(field "$alone" good_per_s)" "$(field "$flood" good_per_s)" "$(ratio "$alone" "$flood")" \
    "$(field "$flood" flood_accepted)" "$(field "$flood" flood_connected_per_s)" "$cpu"
}
echo "Flood: $FLOOD sessions, a fresh /64 of 2001:db8:1::/48 per connection; $SECS s per phase."
echo "(a) churn, good sender keeps one session; (b) flood holds each connection 10 s, a line every 3 s;"
echo "(c) churn, good sender opens a connection per message. Pinned: flood on CPU 0, server and good sender on CPU 1."
echo
echo '| server | variant | good msg/s alone | good msg/s under flood | ratio | flood messages accepted | flood connections completed/s | server CPU µs per refused connection |'
echo '|---|---|---|---|---|---|---|---|'
for v in a b c; do
  for pin_mode in pinned unpinned; do
    row portcullis pc $v $pin_mode
    [ -n "${BASELINE_BIN:-}" ] && [ $v = a ] && row "portcullis (baseline build)" base $v $pin_mode
    row "Postfix (anvil /64, good sender exempted)" pf $v $pin_mode
  done
done
row "Postfix + portcullis policy service" pfp a unpinned
echo
echo "Default pool's limit: 60 messages a minute (burst 60), i.e. at most $((60 + SECS)) flood messages per phase."
echo "portcullis after the flood phases: RSS ${R[pc,rss]} KiB, ${R[pc,buckets]} rate buckets in state."
echo
echo "kernel_blocklist + escalate_after = 16, churning flood, two phases back to back:"
for i in 1 2; do
  echo "  phase $i: flood connections completed/s $(field "${R[kern,$i]}" flood_connected_per_s), flood messages accepted $(field "${R[kern,$i]}" flood_accepted), good msg/s $(field "${R[kern,$i]}" good_per_s), server refusals $(field "${R[kern,$i]}" server_refusals)"
done
echo "  blocklist entries at the end: ${R[kern,blocks]}"
echo
echo "raw:"
for k in "${!R[@]}"; do echo "  $k ${R[$k]}"; done | sort

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
# connection per message. Each in rounds of: the good sender alone, then
# flooded, with the flood generator on CPU 0 and the server and good
# sender on CPU 1 (pinned, alone too), then the same unpinned; medians
# over the rounds.
#
# portcullis runs as the Debian package runs it: started as root with
# `user = "nobody"`, everything else (kernel blocklist, escalation,
# repeat blocks) the defaults'. The kernel's drops are counted from the
# nftables table. Then the refusal that still reaches user space: the
# kernel's copy off, the flood's /48 blocked, the server's CPU time per
# refused connection.
#
# Everything runs in a network namespace this script creates.
#
#   bash bench/cos_flood.sh             # 10 s per phase, 3 rounds, 200 flood sessions
#   SECONDS_PER_PHASE=20 REPS=5 bash bench/cos_flood.sh
#   WORK_BASE=/dev/shm bash bench/cos_flood.sh   # spools on tmpfs
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
SECS=${SECONDS_PER_PHASE:-10} FLOOD=${FLOOD:-200} REPS=${REPS:-3}
BIN="$CARGO_TARGET_DIR/release/portcullis"
# WORK_BASE=/dev/shm keeps both servers' spools off the disk: on a
# virtual disk whose fsync latency moves from phase to phase, the good
# sender's rate moves with it, flood or not.
work=$(mktemp -d "${WORK_BASE:-/var/tmp}/portcullis-flood.XXXXXX")
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

# The good sender's class (an SPF-identified domain, class "new") has
# budgets far above what one client can send here: at 60,000 a minute
# it was held to 1,000 messages a second by its own budget, and a phase
# after an idle pause got the bucket's burst on top (rates of 1,000 to
# 3,200 msg/s from one phase to the next, whatever the flood did).
# The same budget on both sides: 10 connections and 60 connections and
# 60 messages a minute. Postfix applies it to each /64 but the good
# sender's; portcullis to each unidentified range AND to all unknown
# senders together (the default pool); the good sender is served by its
# domain's class.
pc_config() {
  cat <<CONF
${PC_TOP:-}
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
connections_per_minute = 6000000
messages_per_minute = 6000000
recipients_per_minute = 6000000
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
# Packets the kernel dropped for our table (both families), read from nft.
kernel_drops() { { nft list table inet portcullis 2>/dev/null || true; } | awk '/counter packets/ {for (i = 1; i < NF; i++) if ($i == "packets") s += $(i + 1)} END {print s + 0}'; }
# Pin PID and its children to CPUS (the server and, for Postfix, its daemons).
pin() {
  local pid=$1 cpus=$2 child
  taskset -a -p -c "$cpus" "$pid" >/dev/null 2>&1 || true
  for child in $(pgrep -P "$pid" || true); do pin "$child" "$cpus"; done
}

start_portcullis() {
  rm -rf "$work/pcdata"
  pc_config "${2:-}" > "$work/pc.toml"
  "$1" serve --config "$work/pc.toml" >"$work/pc.log" 2>&1 &
  pc_pid=$!
  wait_port $HTTP_PORT || { tail -20 "$work/pc.log" >&2; exit 1; }
}
stop_portcullis() { kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""; }

# One flood phase against portcullis: prints the JSON line with the
# server's refusals, its CPU per refused connection and the kernel's
# drops added.
pc_flood() {
  local t0 r0 k0 out t1 r1 k1
  t0=$(cpu_ticks "$pc_pid") r0=$(metric '^portcullis_connections_total.*outcome="refused_') k0=$(kernel_drops)
  out=$(phase $PC_PORT "$@")
  t1=$(cpu_ticks "$pc_pid") r1=$(metric '^portcullis_connections_total.*outcome="refused_') k1=$(kernel_drops)
  python3 - "$out" "$((t1 - t0))" "$(echo "$r1 - $r0" | bc)" "$((k1 - k0))" <<'PY'
import json, sys
out, ticks, refused, drops = json.loads(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
out["server_refusals"] = int(refused)
out["server_cpu_us_per_refusal"] = round(ticks * 10000 / refused, 1) if refused else None
out["kernel_drops"] = drops
print(json.dumps(out))
PY
}

# Every result goes to this file as "server variant pinning round JSON":
# the summary takes medians over the rounds.
results="$work/results"
: > "$results"
record() { echo "$1 $2 $3 $4 $5" >> "$results"; }

# One round for one pinning: the good sender alone (pinned as in the
# flood phases that follow, so a ratio compares like with like), then the
# flood variants. Alone and flooded phases interleave, so drift between
# rounds moves both sides of a ratio.
flood_round() {
  local tag=$1 port=$2 pin_mode=$3 rep=$4 flood_fn=$5 args=() v mode good
  [ "$pin_mode" = pinned ] && args=(--flood-cpu 0 --good-cpu 1)
  record "$tag" alone_keep "$pin_mode" "$rep" "$(phase "$port" --no-flood --good-mode keep "${args[@]}")"
  for v in a b c; do
    case $v in a) mode=churn good=keep ;; b) mode=dribble good=keep ;; c) mode=churn good=reconnect ;; esac
    [ $v = c ] && record "$tag" alone_reconnect "$pin_mode" "$rep" \
      "$(phase "$port" --no-flood --good-mode reconnect "${args[@]}")"
    record "$tag" $v "$pin_mode" "$rep" "$($flood_fn "$port" --flood-mode $mode --good-mode $good "${args[@]}")"
  done
}
pc_phase() { shift; pc_flood "$@"; }
pf_phase() { phase "$@"; }

# portcullis as the Debian package runs it: started as root with
# `user = "nobody"`; the kernel blocklist, escalation and repeat blocks
# are the defaults'.
PC_TOP='user = "nobody"' start_portcullis "$BIN"
# The good sender's first message makes its range good.test's.
phase $PC_PORT --no-flood --good-mode keep >/dev/null
for rep in $(seq "$REPS"); do
  for pin_mode in pinned unpinned; do
    if [ $pin_mode = pinned ]; then pin "$pc_pid" 1; else pin "$pc_pid" 0,1; fi
    flood_round pc $PC_PORT $pin_mode "$rep" pc_phase
  done
done
pin "$pc_pid" 0,1
pc_rss=$(awk '/VmRSS/ {print $2}' /proc/$pc_pid/status)
pc_buckets=$(metric '^portcullis_state_buckets ')
pc_kernel_metric=$(metric '^portcullis_kernel_dropped_packets_total')
stop_portcullis

# The refusal that reaches user space: the kernel's copy off, the flood's
# ranges blocked by one warm-up phase (escalation reaches the /48), then
# the flood alone against the server on one CPU: every connection is
# refused by the accept loop, and the server's CPU time is all refusals.
start_portcullis "$BIN" "kernel_blocklist = false"
pin "$pc_pid" 1
pc_flood --role flood --flood-mode churn --flood-cpu 0 >/dev/null
for rep in $(seq "$REPS"); do
  record pc userspace pinned "$rep" "$(pc_flood --role flood --flood-mode churn --flood-cpu 0)"
done
stop_portcullis

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
for rep in $(seq "$REPS"); do
  for pin_mode in pinned unpinned; do
    if [ $pin_mode = pinned ]; then pin "$pf_master" 1; else pin "$pf_master" 0,1; fi
    flood_round pf $PF_PORT $pin_mode "$rep" pf_phase
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
record pfp alone_keep unpinned 1 "$(phase $PF_PORT --no-flood --good-mode keep)"
record pfp a unpinned 1 "$(phase $PF_PORT --flood-mode churn --good-mode keep)"
bash bench/postfix_instance.sh stop "$work/postfix2" >/dev/null 2>&1 || true
stop_portcullis

echo "Flood: $FLOOD sessions, a fresh /64 of 2001:db8:1::/48 per connection; $SECS s per phase, $REPS rounds."
echo "(a) churn, good sender keeps one session; (b) flood holds each connection 10 s, a line every 3 s;"
echo "(c) churn, good sender opens a connection per message. Pinned: flood on CPU 0, server and good sender on CPU 1"
echo "(the good sender alone is pinned the same way). Rates are medians over the rounds; the ratio is the median"
echo "of each round's flooded rate over the same round's rate alone, with the lowest and highest beside it."
echo
python3 - "$results" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    tag, kind, pin, rep, js = line.split(" ", 4)
    rows.setdefault((tag, kind, pin), []).append(json.loads(js))
med = lambda xs: statistics.median(xs) if xs else float("nan")
names = {"pc": "portcullis (defaults, user = nobody)", "pf": "Postfix (anvil /64, good sender exempted)",
         "pfp": "Postfix + portcullis policy service"}
print("| server | variant | good msg/s alone | good msg/s under flood | ratio (min-max) | flood messages accepted | flood connections completed/s | refused in user space | SYNs dropped in the kernel |")
print("|---|---|---|---|---|---|---|---|---|")
for v in "abc":
    for pin in ("pinned", "unpinned"):
        for tag in ("pc", "pf", "pfp"):
            flood = rows.get((tag, v, pin))
            alone = rows.get((tag, "alone_reconnect" if v == "c" else "alone_keep", pin))
            if not flood or not alone:
                continue
            a = [r["good_per_s"] for r in alone]
            f = [r["good_per_s"] for r in flood]
            # Each flooded phase against the alone phase of its own round.
            per_round = [x / y for x, y in zip(f, a) if y]
            ratio = med(per_round) if per_round else float("nan")
            spread = f"{min(per_round):.2f}-{max(per_round):.2f}" if per_round else "-"
            user = med([r["server_refusals"] for r in flood]) if "server_refusals" in flood[0] else "n/a"
            drops = med([r["kernel_drops"] for r in flood]) if "kernel_drops" in flood[0] else "n/a"
            print(f"| {names[tag]} | ({v}) {pin} | {med(a):.0f} | {med(f):.0f} | **{ratio:.2f}** ({spread}) | "
                  f"{med([r['flood_accepted'] for r in flood]):.0f} | {med([r['flood_connected_per_s'] for r in flood]):.1f} | {user} | {drops} |")
us = rows.get(("pc", "userspace", "pinned"), [])
if us:
    print()
    print("Refusals that reach user space (kernel_blocklist off, the flood's /48 blocked, flood alone, server on one CPU):")
    for r in us:
        print(f"  {r['server_refusals']} refusals, server CPU {r['server_cpu_us_per_refusal']} µs per refused connection, "
              f"{r['flood_connected_per_s']} flood connections/s")
    print(f"  median: **{med([r['server_cpu_us_per_refusal'] for r in us if r['server_cpu_us_per_refusal']]):.1f} µs** per refused connection")
PY
echo
echo "Default pool's limit: 60 messages a minute (burst 60)."
echo "portcullis after its flood phases: RSS $pc_rss KiB, $pc_buckets rate buckets in state;"
echo "portcullis_kernel_dropped_packets_total at the end: $pc_kernel_metric."
echo
echo "raw:"
sed 's/^/  /' "$results"

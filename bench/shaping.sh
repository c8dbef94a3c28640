#!/usr/bin/env bash
# Outbound manners (issue 30). Part 1: MESSAGES messages for three domains
# whose MX is one Postfix receiver limited by its anvil to RATE messages a
# minute from one client (`smtpd_client_message_rate_limit`): how often the
# receiver's limit was hit ("rate limit exceeded" in its log) and the time
# until all arrived, for three senders at once, each to its own receiver:
#   * portcullis with its defaults (no rate known: the site learns it from
#     the receiver's refusals);
#   * portcullis with the site's rate configured (a `[[delivery.site]]` at
#     nine tenths of the receiver's limit), the knowledge Postfix is given;
#   * Postfix with its default smtp settings and
#     `default_destination_rate_delay` as its documentation advises for a
#     receiver that takes RATE a minute: 60/RATE seconds per destination,
#     in whole seconds (Postfix takes no less than 1 s). Postfix queues
#     per destination (the domain), so the three domains are three
#     destinations (three addresses of the one receiver by a transport
#     map: Postfix has no resolver of ours), as they are when their MX
#     records name one provider.
# Part 2: the cost of the shaping decisions with SITE_MESSAGES messages
# over SITES sites (crates/shaping/benches/sites.rs), and of the whole
# queue's scheduling with them (crates/queue/benches/scheduler.rs).
#   bash bench/shaping.sh     # MESSAGES=3000 RATE=150 SITES=1000 SITE_MESSAGES=100000
# BENCH_BIN (or NO_BUILD=1 for the binary already in $CARGO_TARGET_DIR)
# skips the build. MAX_WAIT (3600 s) bounds each sender's run; PART=1 runs
# part 1 only. Part 1 is
# paced by the receivers, not the CPU; part 2 needs a quiet machine.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
MESSAGES=${MESSAGES:-3000} RATE=${RATE:-150} SESSIONS=${SESSIONS:-10} MAX_WAIT=${MAX_WAIT:-3600}
SITES=${SITES:-1000} SITE_MESSAGES=${SITE_MESSAGES:-100000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
if [ -z "${BENCH_BIN:-}" ] && [ -z "${NO_BUILD:-}" ]; then bash .ci/build-release -q; fi
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release/portcullis}"
work=$(mktemp -d /var/tmp/portcullis-shaping.XXXXXX)
chmod 755 "$work"
DNS_PORT=3729 PF_PORT=3728
DOMAINS="a.test,b.test,c.test"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for r in rx-learn rx-told rx-pf pf; do bash bench/postfix_instance.sh stop "$work/$r" >/dev/null 2>&1 || true; done
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT

bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT" "a IN MX 10 mx.rl.test.
b IN MX 10 mx.rl.test.
c IN MX 10 mx.rl.test.
mx.rl IN A 127.0.0.2"

# A receiving "provider" in DIR on PORT (ADDR: 127.0.0.2, or all).
start_receiver() {
  local dir=$1 port=$2 addr=$3
  PF_ADDR=$addr PF_EXTRA="inet_interfaces = all
virtual_mailbox_domains = a.test b.test c.test
smtpd_client_event_limit_exceptions =
smtpd_client_message_rate_limit = $RATE
anvil_rate_time_unit = 60s" bash bench/postfix_instance.sh start "$work/$dir" "$port" >/dev/null
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.2/$port") 2>/dev/null && return 0; sleep 0.1; done
}
limit_hits() { grep -c "rate limit exceeded" "$work/$1/maillog" 2>/dev/null || true; }

# Seconds from the first submission until MESSAGES arrived at receiver RX
# (or MAX_WAIT passed), into FILE.
deliver_all() {
  local file=$1 rx=$2 port=$3; shift 3
  local t0 t1 n
  t0=$(date +%s.%N)
  RCPT_DOMAINS=$DOMAINS python3 bench/relay_load.py "$port" "$MESSAGES" "$SESSIONS" "$@" >/dev/null
  for _ in $(seq $((MAX_WAIT * 2))); do
    n=$(count_files "$work/$rx/mail")
    [ "$n" -ge "$MESSAGES" ] && break
    sleep 0.5
  done
  t1=$(date +%s.%N)
  echo "$(echo "$t1 - $t0" | bc -l) $(count_files "$work/$rx/mail")" >"$file"
}

# portcullis as the sender: NAME, its receiver's port, its ports, and an
# optional site table.
start_portcullis() {
  local name=$1 rx_port=$2 sub=$3 http=$4 site=${5:-}
  mkdir -p "$work/$name"
  cat > "$work/$name/p.toml" <<CONF
hostname = "mx.bench.test"
data_dir = "$work/$name/data"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[[listener]]
role = "submission"
bind = ["127.0.0.1:$sub"]
[http]
bind = "127.0.0.1:$http"
[[domain]]
name = "bench.test"
[submission]
recipients_per_hour = 1000000
recipients_per_day = 1000000
messages_per_hour = 1000000
[containment]
enabled = false
[delivery]
port = $rx_port
mta_sts = false
$site
CONF
  printf 'relay-pw\n' | "$BIN" user add relay@bench.test --password-stdin --config "$work/$name/p.toml" >/dev/null
  PORTCULLIS_LOG_FORMAT=json "$BIN" serve --config "$work/$name/p.toml" >"$work/$name/log" 2>&1 &
  pids+=($!)
  wait_port "$sub"
}

start_receiver rx-learn 3725 127.0.0.2
start_receiver rx-told 3730 127.0.0.2
start_receiver rx-pf 3731 all
start_portcullis learn 3725 3726 3727
start_portcullis told 3730 3732 3733 "[[delivery.site]]
name = \"rl\"
mx = [\"mx.rl.test\"]
messages_per_minute = $((RATE * 9 / 10))"

# Postfix as the sender: whole seconds, at least 1.
delay=$(( (60 + RATE - 1) / RATE ))
PF_EXTRA="mydestination =
transport_maps = inline:{a.test=smtp:[127.0.0.2]:3731,b.test=smtp:[127.0.0.3]:3731,c.test=smtp:[127.0.0.4]:3731}
default_destination_rate_delay = ${delay}s
virtual_mailbox_domains =" bash bench/postfix_instance.sh start "$work/pf" "$PF_PORT" >/dev/null
cat >> "$work/pf/etc/main.cf" <<CONF
smtpd_tls_cert_file = $work/pf/cert.pem
smtpd_tls_key_file = $work/pf/key.pem
smtpd_tls_security_level = may
CONF
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/pf/key.pem" -out "$work/pf/cert.pem" -days 2 -subj /CN=postfix.bench.test 2>/dev/null
chmod 644 "$work/pf/key.pem"
postfix -c "$work/pf/etc" reload >/dev/null 2>&1 || true
wait_port "$PF_PORT"

# The three at once: each is paced by its own receiver.
deliver_all "$work/learn.t" rx-learn 3726 relay@bench.test relay-pw &
j1=$!
deliver_all "$work/told.t" rx-told 3732 relay@bench.test relay-pw &
j2=$!
deliver_all "$work/pf.t" rx-pf $PF_PORT &
j3=$!
wait $j1 $j2 $j3

row() {
  local label=$1 t=$2 rx=$3
  read -r secs n <"$work/$t"
  printf '| %s | %d | %d | %d | %.1f |\n' "$label" "$MESSAGES" "$n" "$(limit_hits "$rx")" "$secs"
}
pauses() { grep -c '"site_paused"' "$work/$1/log" || true; }
printf '| sender | messages | delivered | receiver limit hits | seconds to deliver all |\n|---|---|---|---|---|\n'
row "portcullis, defaults ($(pauses learn) site pauses)" learn.t rx-learn
row "portcullis, site at $((RATE * 9 / 10))/min ($(pauses told) site pauses)" told.t rx-told
row "Postfix, rate delay ${delay}s per destination" pf.t rx-pf
echo "receiver limit: $RATE messages a minute from one client (anvil, 60 s)"
printf 'portcullis (defaults) pauses:\n%s\n' "$(grep '"site_paused"' "$work/learn/log" | cut -c1-220 || true)"
echo

# Part 2: the decisions alone, in-process (PART=1 stops before it).
[ "${PART:-}" = 1 ] && exit 0
SITES=$SITES SITE_MESSAGES=$SITE_MESSAGES cargo bench -q -p portcullis-shaping --bench sites
echo
# The whole queue: the scheduler and the site gate, paced by the sites,
# then with every site paused by a rate answer.
for pause in 0 1; do
  BENCH_DIR=/dev/shm PAUSE=$pause SITES=$SITES SITE_MESSAGES=$SITE_MESSAGES \
    cargo bench -q -p portcullis-queue --bench scheduler | tail -n $((pause ? 1 : 3))
done

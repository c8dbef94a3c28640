#!/usr/bin/env bash
# Outbound manners (issue 30). Part 1: MESSAGES messages for three domains
# whose MX is one Postfix limited by its anvil to RATE messages a minute
# from one client (`smtpd_client_message_rate_limit`): how many times the
# receiver's limit was hit ("rate limit exceeded" in its log) and the time
# until all arrived, portcullis as the sender (its site back-off, default
# settings) against Postfix as the sender (default smtp settings with
# `default_destination_rate_delay` spacing each destination as its
# documentation advises: three destinations share the limit, so 3 x
# 60/RATE seconds). Part 2: the cost of the shaping decisions with
# SITE_MESSAGES messages over SITES sites (crates/shaping/benches/sites.rs).
#   bash bench/shaping.sh     # MESSAGES=3000 RATE=600 SITES=1000 SITE_MESSAGES=100000
# NO_BUILD=1 uses the binary already in $CARGO_TARGET_DIR.
# The figures need a quiet machine.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
MESSAGES=${MESSAGES:-3000} RATE=${RATE:-600} SESSIONS=${SESSIONS:-10}
SITES=${SITES:-1000} SITE_MESSAGES=${SITE_MESSAGES:-100000}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
[ -n "${NO_BUILD:-}" ] || bash .ci/build-release -q
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-shaping.XXXXXX)
chmod 755 "$work"
RX_PORT=3725 PC_SUB=3726 PC_HTTP=3727 PF_PORT=3728 DNS_PORT=3729
RX_ADDR=127.0.0.2
DOMAINS="a.test,b.test,c.test"
pc_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  bash bench/postfix_instance.sh stop "$work/rx" >/dev/null 2>&1 || true
  bash bench/postfix_instance.sh stop "$work/pf" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT

bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT" "a IN MX 10 mx.rl.test.
b IN MX 10 mx.rl.test.
c IN MX 10 mx.rl.test.
mx.rl IN A $RX_ADDR"

# The receiving "provider": a fresh Postfix (and anvil) for each sender.
start_receiver() {
  bash bench/postfix_instance.sh stop "$work/rx" >/dev/null 2>&1 || true
  rm -rf "$work/rx"
  PF_ADDR=$RX_ADDR PF_EXTRA="inet_interfaces = all
virtual_mailbox_domains = a.test b.test c.test
smtpd_client_event_limit_exceptions =
smtpd_client_message_rate_limit = $RATE
anvil_rate_time_unit = 60s" bash bench/postfix_instance.sh start "$work/rx" "$RX_PORT" >/dev/null
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/$RX_ADDR/$RX_PORT") 2>/dev/null && return 0; sleep 0.1; done
}
limit_hits() { grep -c "rate limit exceeded" "$work/rx/maillog" 2>/dev/null || true; }

# Seconds from the first submission until MESSAGES arrived.
deliver_all() {
  local port=$1; shift
  local t0 t1
  t0=$(date +%s.%N)
  RCPT_DOMAINS=$DOMAINS python3 bench/relay_load.py "$port" "$MESSAGES" "$SESSIONS" "$@" >/dev/null
  for _ in $(seq 36000); do [ "$(count_files "$work/rx/mail")" -ge "$MESSAGES" ] && break; sleep 0.1; done
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l
}

# portcullis as the sender.
start_receiver
mkdir -p "$work/pc"
cat > "$work/pc/p.toml" <<CONF
hostname = "mx.bench.test"
data_dir = "$work/pc/data"
[dns]
nameservers = ["127.0.0.1:$DNS_PORT"]
[[listener]]
role = "submission"
bind = ["127.0.0.1:$PC_SUB"]
[http]
bind = "127.0.0.1:$PC_HTTP"
[[domain]]
name = "bench.test"
[submission]
recipients_per_hour = 1000000
recipients_per_day = 1000000
messages_per_hour = 1000000
[delivery]
port = $RX_PORT
mta_sts = false
CONF
printf 'relay-pw\n' | "$BIN" user add relay@bench.test --password-stdin --config "$work/pc/p.toml" >/dev/null
PORTCULLIS_LOG_FORMAT=json "$BIN" serve --config "$work/pc/p.toml" >"$work/pc/log" 2>&1 &
pc_pid=$!
wait_port "$PC_SUB"
pc_secs=$(deliver_all $PC_SUB relay@bench.test relay-pw)
pc_hits=$(limit_hits)
pc_pauses=$(grep -c '"site_paused"' "$work/pc/log" || true)
pc_pause_log=$(grep '"site_paused"' "$work/pc/log" | cut -c1-200 || true)
kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""

# Postfix as the sender, to the same receiver by a transport map (it has
# no resolver of ours), one destination per domain.
start_receiver
# Postfix takes whole seconds: rounded up, at least 1.
delay=$(( (3 * 60 + RATE - 1) / RATE ))
PF_EXTRA="mydestination =
transport_maps = inline:{a.test=smtp:[$RX_ADDR]:$RX_PORT,b.test=smtp:[$RX_ADDR]:$RX_PORT,c.test=smtp:[$RX_ADDR]:$RX_PORT}
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
pf_secs=$(deliver_all $PF_PORT)
pf_hits=$(limit_hits)

printf '| sender | messages | receiver limit hits | seconds to deliver all |\n|---|---|---|---|\n'
printf '| portcullis (%s site pauses) | %d | %d | %.1f |\n' "$pc_pauses" "$MESSAGES" "$pc_hits" "$pc_secs"
printf '| Postfix (rate delay %ds) | %d | %d | %.1f |\n' "$delay" "$MESSAGES" "$pf_hits" "$pf_secs"
echo "receiver limit: $RATE messages a minute from one client"
printf 'portcullis pauses:\n%s\n' "$pc_pause_log"
echo

# Part 2: the decisions alone, in-process.
SITES=$SITES SITE_MESSAGES=$SITE_MESSAGES cargo bench -q -p portcullis-shaping --bench sites

#!/usr/bin/env bash
# Relay throughput: messages submitted (STARTTLS) and delivered to
# Postfix's smtp-sink, portcullis beside Postfix on the same machine.
# portcullis' submission also authenticates every session (AUTH PLAIN);
# Postfix's relays for 127.0.0.0/8 without AUTH (its SASL needs Dovecot or
# Cyrus), so it does less work per session than portcullis does.
#   bash bench/relay.sh     # MESSAGES=5000 SESSIONS=10 ROUNDS=2
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
MESSAGES=${MESSAGES:-5000} SESSIONS=${SESSIONS:-10} ROUNDS=${ROUNDS:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
bash .ci/build-release -q
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-relay.XXXXXX)
chmod 755 "$work"
SINK=3700 PC_SUB=3587 PC_HTTP=3580 PF_PORT=3588 DNS_PORT=3554
pc_pid="" sink_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null || true
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT

smtp-sink -u postfix "127.0.0.1:$SINK" 1000 &
sink_pid=$!
bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT"

start_portcullis() {
  rm -rf "$work/pc"; mkdir -p "$work/pc"
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

# Raw speed: one account sends far beyond its own history.
[containment]
enabled = false
messages_per_hour = 1000000
[delivery]
smarthost = "127.0.0.1:$SINK"
CONF
  printf 'relay-pw\n' | "$BIN" user add relay@bench.test --password-stdin --config "$work/pc/p.toml" >/dev/null
  "$BIN" serve --config "$work/pc/p.toml" >"$work/pc/log" 2>&1 &
  pc_pid=$!
  wait_port "$PC_SUB" || exit 1
}

pc_queue() { python3 -c "import json,urllib.request;print(json.load(urllib.request.urlopen('http://127.0.0.1:$PC_HTTP/healthz'))['queued'])"; }
pf_queue() { find "$work/postfix/spool/active" "$work/postfix/spool/incoming" "$work/postfix/spool/deferred" -type f 2>/dev/null | wc -l; }

# Seconds from the first submission until the queue is empty again.
run() {
  local port=$1 queue=$2; shift 2
  local t0 t1
  t0=$(date +%s.%N)
  python3 bench/relay_load.py "$port" "$MESSAGES" "$SESSIONS" "$@" >/dev/null
  for _ in $(seq 1200); do [ "$($queue)" = 0 ] && break; sleep 0.1; done
  t1=$(date +%s.%N)
  echo "$MESSAGES / ($t1 - $t0)" | bc -l
}

bash bench/postfix_instance.sh start "$work/postfix" "$PF_PORT" >/dev/null
cat >> "$work/postfix/etc/main.cf" <<CONF
relayhost = [127.0.0.1]:$SINK
smtpd_tls_cert_file = $work/postfix/cert.pem
smtpd_tls_key_file = $work/postfix/key.pem
smtpd_tls_security_level = may
virtual_mailbox_domains =
CONF
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$work/postfix/key.pem" -out "$work/postfix/cert.pem" -days 2 -subj /CN=postfix.bench.test 2>/dev/null
chmod 644 "$work/postfix/key.pem"
postfix -c "$work/postfix/etc" reload >/dev/null 2>&1 || true
sleep 1

pc_rates=() pf_rates=()
for round in $(seq "$ROUNDS"); do
  start_portcullis
  pc_rates+=("$(run $PC_SUB pc_queue relay@bench.test relay-pw)")
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""
  pf_rates+=("$(run $PF_PORT pf_queue)")
done

report "${pc_rates[@]}" -- "${pf_rates[@]}"

#!/usr/bin/env bash
# Messages per second accepted on port 25 from Postfix's smtp-source,
# portcullis against chasquid (Debian's chasquid package), side by side in
# one network namespace with its own NSD on 127.0.0.1:53: chasquid resolves
# through /etc/resolv.conf only, and `ip netns exec` gives the namespace a
# resolv.conf of its own, so neither server ever asks a real resolver.
# Both check SPF for the sender (NXDOMAIN here); portcullis also does DKIM,
# DMARC and iprev. Prints a Markdown table. Needs root (the namespace).
#
#   bash bench/chasquid.sh                 # 20 sessions, 20000 messages, 1 KiB
#   ROUNDS=3 MESSAGES=5000 bash bench/chasquid.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
SESSIONS=${SESSIONS:-20} MESSAGES=${MESSAGES:-20000} SIZE=${SIZE:-1024} ROUNDS=${ROUNDS:-2}
command -v chasquid >/dev/null || { echo "chasquid is not installed (apt-get install chasquid)" >&2; exit 1; }
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
bash .ci/build-release -q
BIN="$CARGO_TARGET_DIR/release/portcullis"
work=$(mktemp -d /var/tmp/portcullis-chq.XXXXXX)
ns="pc-chq-$$"
PC_PORT=3525 CHQ_PORT=3625
pc_pid="" chq_pid=""
in_ns() { ip netns exec "$ns" "$@"; }
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  [ -n "$chq_pid" ] && kill "$chq_pid" 2>/dev/null || true
  in_ns bash bench/nsd_instance.sh stop "$work/dns" 2>/dev/null || true
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "/etc/netns/$ns"
  [ -n "${KEEP:-}" ] && echo "kept $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"
ip -n "$ns" link set lo up
mkdir -p "/etc/netns/$ns"
echo "nameserver 127.0.0.1" > "/etc/netns/$ns/resolv.conf"
in_ns bash bench/nsd_instance.sh start "$work/dns" 53

# chasquid: the bench.test domain with user u, a self-signed certificate,
# and an MDA that writes each message into a Maildir (without fsync, which
# favours chasquid: portcullis syncs its Maildir before the renames).
conf="$work/chq/conf"
mkdir -p "$conf/domains/bench.test" "$conf/certs/mx.bench.test" "$work/chq/data" "$work/chq/mail/new"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=mx.bench.test" \
  -keyout "$conf/certs/mx.bench.test/privkey.pem" -out "$conf/certs/mx.bench.test/fullchain.pem" 2>/dev/null
cat > "$work/chq/mda.sh" <<MDA
#!/bin/sh
cat > "$work/chq/mail/new/\$(date +%s%N).\$\$"
MDA
chmod +x "$work/chq/mda.sh"
cat > "$conf/chasquid.conf" <<CONF
hostname: "mx.bench.test"
smtp_address: "127.0.0.1:$CHQ_PORT"
submission_address: "127.0.0.1:$((CHQ_PORT + 1))"
submission_over_tls_address: "127.0.0.1:$((CHQ_PORT + 2))"
mail_delivery_agent_bin: "$work/chq/mda.sh"
mail_delivery_agent_args: "%to%"
data_dir: "$work/chq/data"
mail_log_path: "$work/chq/mail.log"
CONF
chasquid-util --configdir="$conf" user-add u@bench.test --password=bench-password >/dev/null

speed_config "$work/pc" "$PC_PORT" 127.0.0.1:53

wait_port_ns() {
  for _ in $(seq 100); do in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "nothing listens on port $1" >&2; return 1
}
blast() {
  local t0 t1
  t0=$(date +%s.%N)
  in_ns smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@remote.test -t u@bench.test "127.0.0.1:$1"
  t1=$(date +%s.%N)
  echo "$MESSAGES / ($t1 - $t0)" | bc -l
}

pc_rates=() chq_rates=()
for round in $(seq "$ROUNDS"); do
  rm -rf "$work/pc/data"
  # Not through in_ns: $! must be the server itself (ip netns exec execs).
  ip netns exec "$ns" "$BIN" serve --config "$work/pc/portcullis.toml" >"$work/pc/log" 2>&1 &
  pc_pid=$!
  wait_port_ns "$PC_PORT"
  pc_rates+=("$(blast $PC_PORT)")
  wait_delivered "$work/pc/data/mail/bench.test/u/new" "$MESSAGES"
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""

  rm -rf "$work/chq/mail/new"/*
  ip netns exec "$ns" chasquid -config_dir "$conf" -logfile "$work/chq/log" >/dev/null 2>&1 &
  chq_pid=$!
  wait_port_ns "$CHQ_PORT"
  chq_rates+=("$(blast $CHQ_PORT)")
  wait_delivered "$work/chq/mail/new" "$MESSAGES"
  kill "$chq_pid"; wait "$chq_pid" 2>/dev/null || true; chq_pid=""
done

PEER=chasquid report "${pc_rates[@]}" -- "${chq_rates[@]}"

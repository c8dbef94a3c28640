#!/usr/bin/env bash
# Accepted messages per second on the mx listener with milters, against
# the same without, and against Postfix with the same milters, in one
# run: no milter, a pass-through pymilter milter
# (tests/e2e/milters/pymilter_peer.py), clamav-milter with clamd (a
# one-signature database built here: no network). Prints a Markdown
# table; run from the repository root on a quiet machine:
#
#   bash bench/milter.sh                 # 10 sessions, 2000 messages, 1 KiB
#   MESSAGES=500 ROUNDS=1 bash bench/milter.sh
#   BENCH_BIN=target/release/portcullis bash bench/milter.sh   # no rebuild
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/lib.sh
. bench/lib.sh
SESSIONS=${SESSIONS:-10} MESSAGES=${MESSAGES:-2000} SIZE=${SIZE:-1024} ROUNDS=${ROUNDS:-2}
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
[ -n "${BENCH_BIN:-}" ] || bash .ci/build-release -q
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release/portcullis}"
work=$(mktemp -d /var/tmp/portcullis-milter-bench.XXXXXX)
chmod 755 "$work"
PC_PORT=3625 PF_PORT=3626 DNS_PORT=3653 PY_PORT=3627 CLAM_PORT=3628
pids=() pc_pid=""
cleanup() {
  [ -n "$pc_pid" ] && kill "$pc_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1 || true
  bash bench/nsd_instance.sh stop "$work/dns" || true
  rm -rf "$work"
}
trap cleanup EXIT

# The milters, started once for every phase.
/usr/bin/python3 tests/e2e/milters/pymilter_peer.py "inet:$PY_PORT@127.0.0.1" - >"$work/pymilter.log" 2>&1 &
pids+=($!)
mkdir -p "$work/clamav/db"
eicar='X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*'
echo "$(printf '%s' "$eicar" | md5sum | cut -d' ' -f1):${#eicar}:Bench-EICAR" > "$work/clamav/db/eicar.hdb"
cat > "$work/clamav/clamd.conf" <<CONF
LocalSocket $work/clamav/clamd.sock
DatabaseDirectory $work/clamav/db
Foreground yes
User root
LogFile $work/clamav/clamd.log
TemporaryDirectory $work/clamav
MaxThreads 4
CONF
clamd -c "$work/clamav/clamd.conf" >/dev/null 2>&1 &
pids+=($!)
for _ in $(seq 600); do [ -S "$work/clamav/clamd.sock" ] && break; sleep 0.1; done
cat > "$work/clamav/milter.conf" <<CONF
MilterSocket inet:$CLAM_PORT@127.0.0.1
ClamdSocket unix:$work/clamav/clamd.sock
Foreground yes
User root
LogFile $work/clamav/milter.log
OnInfected Reject
OnFail Defer
MaxThreads 20
CONF
clamav-milter -c "$work/clamav/milter.conf" >/dev/null 2>&1 &
pids+=($!)
wait_port "$PY_PORT"
wait_port "$CLAM_PORT"
bash bench/nsd_instance.sh start "$work/dns" "$DNS_PORT" ""

# Accepted msg/s: from the first connection until smtp-source has every 250.
blast() {
  local t0 t1
  t0=$(date +%s.%N)
  smtp-source -s "$SESSIONS" -m "$MESSAGES" -l "$SIZE" -f bench@remote.test -t u@bench.test "127.0.0.1:$1"
  t1=$(date +%s.%N)
  echo "$MESSAGES / ($t1 - $t0)" | bc -l
}

# portcullis with the milter at SOCKET (none: "").
portcullis_round() {
  rm -rf "$work/pc"
  speed_config "$work/pc" "$PC_PORT" "127.0.0.1:$DNS_PORT"
  [ -n "$1" ] && printf '[[milter]]\nsocket = "%s"\ntimeout_ms = 30000\n' "$1" >> "$work/pc/portcullis.toml"
  "$BIN" serve --config "$work/pc/portcullis.toml" >"$work/pc/log" 2>&1 &
  pc_pid=$!
  wait_port "$PC_PORT" >&2
  blast "$PC_PORT"
  kill "$pc_pid"; wait "$pc_pid" 2>/dev/null || true; pc_pid=""
}

# Postfix with the milter at SOCKET (none: "").
postfix_round() {
  rm -rf "$work/postfix"
  PF_EXTRA=$([ -n "$1" ] && printf 'smtpd_milters = %s\nmilter_default_action = tempfail\n' "$1") \
    bash bench/postfix_instance.sh start "$work/postfix" "$PF_PORT" >/dev/null
  wait_port "$PF_PORT" >&2
  blast "$PF_PORT"
  bash bench/postfix_instance.sh stop "$work/postfix" >/dev/null 2>&1
}

printf '| milter | round | portcullis msg/s | Postfix msg/s |\n|---|---|---|---|\n'
for name in none pymilter clamav-milter; do
  case $name in
    none) socket="" ;;
    pymilter) socket="inet:127.0.0.1:$PY_PORT" ;;
    clamav-milter) socket="inet:127.0.0.1:$CLAM_PORT" ;;
  esac
  for round in $(seq "$ROUNDS"); do
    a=$(portcullis_round "$socket")
    b=$(postfix_round "$socket")
    printf '| %s | %d | %.0f | %.0f |\n' "$name" "$round" "$a" "$b"
  done
done

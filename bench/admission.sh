#!/usr/bin/env bash
# Admission decisions per second on one core: embedded state, a real Redis
# on loopback, and a real three-master Redis Cluster (all started here and
# thrown away after). Then a 100,000-address rotation flood (64 /64s)
# against an empty Redis, and what it left there: keys must grow with
# ranges and identities, not with addresses.
#
#   bash bench/admission.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
work=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true; rm -rf "$work"' EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

redis() { # port, extra args...
    local port=$1; shift
    mkdir -p "$work/$port"
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work/$port" "$@" >/dev/null &
    pids+=($!)
    for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && return; sleep 0.05; done
    echo "redis-server on $port did not start" >&2; exit 1
}

single=$(free_port)
redis "$single"
cluster=()
for _ in 1 2 3; do
    p=$(free_port)
    # The bus port is named: client port + 10000 may be out of range.
    redis "$p" --cluster-enabled yes --cluster-config-file nodes.conf --cluster-port "$(free_port)"
    cluster+=("$p")
done
redis-cli --cluster create "${cluster[@]/#/127.0.0.1:}" --cluster-replicas 0 --cluster-yes >/dev/null
for p in "${cluster[@]}"; do
    until redis-cli -p "$p" cluster info | grep -q cluster_state:ok; do sleep 0.1; done
done
seeds=$(printf 'redis://127.0.0.1:%s,' "${cluster[@]}")

cargo bench -q -p portcullis-state --bench admission --no-run 2>/dev/null
bench() { cargo bench -q -p portcullis-state --bench admission 2>/dev/null | grep -v '^$'; }

echo "== a fresh /64 for every decision"
PORTCULLIS_BENCH_REDIS="redis://127.0.0.1:$single/" PORTCULLIS_BENCH_CLUSTER="${seeds%,}" bench

echo "== 100,000 addresses rotating in 64 /64s, on an empty Redis and cluster"
redis-cli -p "$single" flushall >/dev/null
for p in "${cluster[@]}"; do redis-cli -p "$p" flushall >/dev/null; done
PORTCULLIS_BENCH_PATTERN=rotate PORTCULLIS_BENCH_SKIP_EMBEDDED=1 \
    PORTCULLIS_BENCH_REDIS="redis://127.0.0.1:$single/" PORTCULLIS_BENCH_CLUSTER="${seeds%,}" bench
info() { redis-cli -p "$1" info memory | awk -F: '/^used_memory:/ {print $2}' | tr -d '\r'; }
base=$(redis-cli -p "$single" dbsize)
echo "redis after the flood: DBSIZE $base, used_memory $(info "$single") bytes"
total=0; mem=0
for p in "${cluster[@]}"; do
    total=$((total + $(redis-cli -p "$p" dbsize))); mem=$((mem + $(info "$p")))
done
echo "redis-cluster after the flood: DBSIZE $total (3 masters), used_memory $mem bytes"
echo "keys after the flood, by kind (redis):"
redis-cli -p "$single" --scan --pattern 'pc:*' | sed -E 's/\{([a-z]+):[^}]*\}/{\1:…}/' | sort | uniq -c | sort -rn | head -12

#!/usr/bin/env bash
# Admission decisions per second on one core: embedded state, and a real
# Redis on loopback (started here, thrown away after).
#
#   bash bench/admission.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
port=${REDIS_PORT:-6391}
work=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" >/dev/null &
rpid=$!
trap 'kill $rpid 2>/dev/null || true; rm -rf "$work"' EXIT
sleep 0.5
PORTCULLIS_BENCH_REDIS="redis://127.0.0.1:$port/" cargo bench -q -p portcullis-state --bench admission 2>/dev/null
echo "redis-server used $(redis-cli -p "$port" info memory | awk -F: '/^used_memory_human/ {print $2}' | tr -d '\r') after the run"

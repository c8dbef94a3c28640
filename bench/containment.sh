#!/usr/bin/env bash
# Containment (issue 29): the submission rate with containment on against
# off in the same run, under a legitimate load it must not touch (many
# accounts, each below the volume floor), and the outside recipients each
# bot scenario got delivered before its hold. Prints Markdown; run from
# the repository root:
#
#   bash bench/containment.sh                   # 2 rounds of 2000 messages
#   ROUNDS=3 MESSAGES=5000 SESSIONS=16 bash bench/containment.sh
#   BENCH_BIN=/path/to/portcullis bash bench/containment.sh   # no build
#
# Without BENCH_BIN it builds (never cleans) in $CARGO_TARGET_DIR. The
# rates need a quiet machine; the bot counts do not. Needs Postfix's
# smtp-sink (the smarthost standing for the outside world).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
[ -n "${BENCH_BIN:-}" ] || cargo build --release --locked -q
BIN="${BENCH_BIN:-$CARGO_TARGET_DIR/release/portcullis}"
PORTCULLIS_BIN="$BIN" exec python3 bench/containment.py

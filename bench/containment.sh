#!/usr/bin/env bash
# Containment (issue 29): the submission rate with containment on against
# off in the same run, and the outside recipients each bot scenario got
# delivered before its hold. Prints Markdown; run from the repository root:
#
#   bash bench/containment.sh                   # 2 rounds of 2000 messages
#   ROUNDS=3 MESSAGES=5000 SESSIONS=16 bash bench/containment.sh
#
# The rates need a quiet machine; the bot counts do not. Needs Postfix's
# smtp-sink (the smarthost standing for the outside world).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/portcullis-target}"
bash .ci/build-release -q
PORTCULLIS_BIN="$CARGO_TARGET_DIR/release/portcullis" exec python3 bench/containment.py

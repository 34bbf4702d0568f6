#!/usr/bin/env bash
# Gateway preset for ../shared/peer/run.sh that measures what learning costs
# serving: LEARNING=off | online | external (the last also starts
# `qroute train --follow` beside the gateway, as a separate process).
# Answers are labelled with learning.default_quality at once
# (feedback_window_ms = 0), so the trainer really steps on the mock's traffic.
#
#   LEARNING=external bash ../shared/peer/run.sh --name qroute-external \
#     --gateway-cmd "bash $PWD/benches/peer/qroute-learning.sh" --model auto
set -euo pipefail
WORK=${PEERBENCH_DIR:-${TMPDIR:-/tmp}/peerbench}
BIN=${QROUTE_BIN:-$(pwd)/target/release/qroute}
[ -x "$BIN" ] || { echo "no qroute binary at $BIN (cargo build --release, or set QROUTE_BIN)" >&2; exit 2; }
MODE=${LEARNING:-off}
D=$WORK/qroute-learning-$GW_PORT; rm -rf "$D"; mkdir -p "$D"
cat > "$D/config.toml" <<TOML
listen = "127.0.0.1:$GW_PORT"
[store]
path = "$D/store"
[learning]
mode = "$MODE"
default_quality = 0.7
feedback_window_ms = 0
[[providers]]
name = "mock"
kind = "openai"
base_url = "$MOCK_BASE"
[[models]]
id = "mock"
provider = "mock"
input_per_mtok = 0.5
output_per_mtok = 1.5
[[models]]
id = "mock-b"
provider = "mock"
input_per_mtok = 3.0
output_per_mtok = 15.0
TOML
if [ "$MODE" = external ]; then
    (
        until curl -sf "http://127.0.0.1:$GW_PORT/v1/health" >/dev/null; do sleep 0.2; done
        exec "$BIN" train --follow --url "http://127.0.0.1:$GW_PORT" --registry "$D/policies" \
            --gateway-config "$D/config.toml" >"$D/follow.log" 2>&1
    ) &
    trap 'kill $! 2>/dev/null || true' EXIT
    "$BIN" serve --config "$D/config.toml"
else
    exec "$BIN" serve --config "$D/config.toml"
fi

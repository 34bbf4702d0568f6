#!/usr/bin/env bash
# Streaming, tools and JSON mode through a real gateway, with the real
# `openai` Python SDK: `qroute mock-provider` streams slowly (a pause between
# chunks) in front of which `qroute serve` routes; the SDK checks that the
# first chunk reaches it before the mock has sent its last (order, read from
# the mock's counters, not time).
#
#   ci/streaming_smoke.sh [path/to/qroute]     (default target/release/qroute)
set -euo pipefail

BIN="${1:-target/release/qroute}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
[[ -x "$BIN" ]] || { echo "error: $BIN is not an executable" >&2; exit 2; }

source "$ROOT/ci/serve_gateway.sh"
MOCK_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
MOCK="http://127.0.0.1:$MOCK_PORT"
"$BIN" mock-provider --port "$MOCK_PORT" --chunk-delay-ms 150 >"$TMP/mock.log" 2>&1 &
EXTRA_PIDS+=($!)
until curl -sf --max-time 2 "$MOCK/mock/stats" >/dev/null; do sleep 0.1; done

cat >"$TMP/config.toml" <<TOML
[[providers]]
name = "mock"
kind = "openai"
base_url = "$MOCK/v1"

[[providers]]
name = "mock-anthropic"
kind = "anthropic"
base_url = "$MOCK"

[[models]]
id = "mock-gpt"
provider = "mock"
input_per_mtok = 1.0
output_per_mtok = 2.0
context_window = 128000

[[models]]
id = "mock-claude"
provider = "mock-anthropic"
input_per_mtok = 3.0
output_per_mtok = 15.0
context_window = 200000
TOML
SERVE_ARGS=(--config "$TMP/config.toml")
serve_gateway "streaming smoke test"
python3 "$ROOT/ci/openai_client_check.py" --base-url "$BASE/v1" --mock-url "$MOCK" || fail "ci/openai_client_check.py --mock-url"

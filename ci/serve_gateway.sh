# Sourced by the CI scripts that drive a real gateway: starts `$BIN serve` on
# a free loopback port with a throw-away data directory, waits for
# /v1/health, and stops it (printing the end of its log on failure) when the
# script exits.
#
#   source ci/serve_gateway.sh
#   serve_gateway LABEL [VAR=VALUE ...]   # environment for the server
#
# SERVE_ARGS (an array) adds arguments to `serve` (e.g. --config FILE);
# processes listed in EXTRA_PIDS (a mock upstream) are stopped at exit too.
#
# Sets TMP (removed at exit), PORT, BASE and SERVER_PID; `fail MESSAGE`
# exits with a failure. The script's result line reads "LABEL: PASS/FAIL".

TMP="$(mktemp -d)"
SERVER_PID=""
GATEWAY_LABEL="gateway"
SERVE_ARGS=()
EXTRA_PIDS=()

_stop_gateway() {
    local rc=$?
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    for pid in "${EXTRA_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    if [[ $rc -ne 0 && -f "$TMP/server.log" ]]; then
        echo "--- last lines of the server log ---" >&2
        tail -n 50 "$TMP/server.log" >&2 || true
    fi
    rm -rf "$TMP"
    if [[ $rc -eq 0 ]]; then
        echo "$GATEWAY_LABEL: PASS"
    else
        echo "$GATEWAY_LABEL: FAIL" >&2
    fi
    exit $rc
}
trap _stop_gateway EXIT

fail() {
    echo "FAIL $*" >&2
    exit 1
}

serve_gateway() {
    GATEWAY_LABEL="$1"
    shift
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
    BASE="http://127.0.0.1:$PORT"
    echo "starting $BIN serve --listen 127.0.0.1:$PORT --data-dir $TMP/data"
    env "$@" "$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$TMP/data" "${SERVE_ARGS[@]}" >"$TMP/server.log" 2>&1 &
    SERVER_PID=$!
    local deadline=$((SECONDS + 60)) status
    until curl -sf --max-time 2 "$BASE/v1/health" -o "$TMP/health.json"; do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID" && status=0 || status=$?
            SERVER_PID=""
            fail "the server exited (status $status) before answering /v1/health"
        fi
        if ((SECONDS >= deadline)); then
            fail "/v1/health did not answer within 60 s"
        fi
        sleep 0.25
    done
}

#!/usr/bin/env bash
# Property-based API testing with Schemathesis: start `qroute serve` on its
# embedded default (no --config) with auth on, point Schemathesis at the
# gateway's own /openapi.json, and fail on any 5xx, any answer that does not
# match the document (status, content type, headers, body), and any request
# the document calls invalid that the server accepts.
#
#   ci/schemathesis.sh [path/to/qroute]     (default target/release/qroute)
#
# Environment:
#   ST_MAX_EXAMPLES   test cases per operation and phase (default 40)
#   ST_MAX_TIME       time budget of the whole run in seconds (default 120)
#   ST_SEED           a fixed seed, to reproduce a run
#   ST_CACHE          where the Schemathesis virtualenv is kept
#                     (default ${XDG_CACHE_HOME:-$HOME/.cache}/qroute-schemathesis)
#
# Every operation is tested, the mutating admin ones (keys, experiments,
# rollback) included: the data directory is a throw-away one.
set -euo pipefail

BIN="${1:-target/release/qroute}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ST_VERSION="4.32.5"
CACHE="${ST_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qroute-schemathesis}"
VENV="$CACHE/venv-$ST_VERSION"

if [[ ! -x "$BIN" ]]; then
    echo "error: $BIN is not an executable (build it with: cargo build --release)" >&2
    exit 2
fi

# Schemathesis, pinned, in its own virtualenv (reused between runs).
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$ST_VERSION"; then
    echo "installing schemathesis $ST_VERSION into $VENV"
    rm -rf "$VENV"
    mkdir -p "$CACHE"
    if ! python3 -m venv "$VENV" 2>/dev/null; then
        # No ensurepip (Debian without python3-venv): a bare venv, filled by
        # the system pip.
        rm -rf "$VENV"
        python3 -m venv --without-pip "$VENV"
        python3 -m pip --python "$VENV/bin/python" install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
    else
        "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$ST_VERSION"
    fi
fi

KEY="st-$(python3 -c 'import secrets; print(secrets.token_hex(24))')"
source "$ROOT/ci/serve_gateway.sh"
serve_gateway schemathesis QROUTE_MASTER_KEY="$KEY"

# What the document cannot express, and nothing else, is relaxed here.
cat >"$TMP/schemathesis.toml" <<'EOF'
# A schema-valid request may still be refused (400) where the rule spans
# fields or depends on the gateway's state, which JSON Schema cannot say; each
# operation's 400 answer documents these:
# - execute, chat: a cost cap no model fits, `combine` without a configured
#   combine model, a chat whose messages are all blank;
# - feedback: `min` >= `max`;
# - experiments: `end_ms` <= `start_ms`, a model or checkpoint that is not
#   configured, arm names that repeat, weights that sum to 0;
# - keys: a model that is not configured, `expires_at` in the past;
# - any of them: an integer written with a fraction (`2.0`), which JSON
#   Schema counts as an integer and the server's parser does not.
[[operations]]
include-operation-id-regex = "^(execute|createChatCompletion|submitFeedback|createExperiment|createKey)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
EOF

args=(
    --config-file "$TMP/schemathesis.toml"
    run "$BASE/openapi.json"
    -H "Authorization: Bearer $KEY"
    --checks all
    # Not the `examples` phase: generating from the document's examples
    # crashed inside Hypothesis ("AST constructor recursion depth mismatch",
    # see `--workers`); coverage, fuzzing and stateful generate from the
    # schemas. The same crash hit coverage generation for deeply nested
    # `oneOf`s in the chat request (content parts, stop, tool_choice,
    # response_format), so the document spells those as single objects with
    # enums instead.
    --phases coverage,fuzzing,stateful
    # `DELETE /v1/keys/{id}` revokes a key, and a revoked key stays readable
    # (with `revoked_ms`): reading it afterwards answers 200 by design.
    --exclude-checks use_after_free
    --max-examples "${ST_MAX_EXAMPLES:-40}"
    --max-time "${ST_MAX_TIME:-120}"
    --request-timeout 30
    # One worker: CPython 3.11's AST constructor keeps its recursion depth
    # in interpreter-wide state (python/cpython#106905), and Hypothesis
    # parses source (to describe a lambda) from every worker thread. With
    # two workers, "AST constructor recursion depth mismatch" was raised
    # inside the tool now and then, counted as a failed operation (CI failed
    # on it on 2026-12-08). One worker still ends within --max-time.
    --workers 1
    --no-color
    # The master key is a throw-away one; unsanitised output shows every
    # field of a failing request (`max_tokens` would read `[Filtered]`).
    --output-sanitize false
)
if [[ -n "${ST_SEED:-}" ]]; then
    args+=(--seed "$ST_SEED")
fi

cd "$TMP"
started=$SECONDS
"$VENV/bin/st" "${args[@]}"
echo "schemathesis ran $((SECONDS - started)) s"

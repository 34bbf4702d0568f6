#!/usr/bin/env bash
# End-to-end smoke test of the gateway: start `qroute serve` on a free port
# with a throw-away data directory, wait for it, and exercise the HTTP API
# (qroute's own, the OpenAI SDK, metrics, the OpenAPI document).
#
#   ci/gateway_smoke.sh [path/to/qroute]     (default target/release/qroute)
#
# Needs curl, python3 and the `openai` Python package.
set -euo pipefail

BIN="${1:-target/release/qroute}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

if [[ ! -x "$BIN" ]]; then
    echo "error: $BIN is not an executable (build it with: cargo build --release)" >&2
    exit 2
fi

source "$ROOT/ci/serve_gateway.sh"
serve_gateway "gateway smoke test"
python3 - "$TMP/health.json" <<'EOF' || fail "/v1/health body"
import json, sys
h = json.load(open(sys.argv[1]))
assert h["status"] in ("ok", "degraded"), h
assert h["models_available"] > 0, h
print(f"ok   /v1/health: status={h['status']} policy_version={h['policy_version']} models_available={h['models_available']}")
EOF

# qroute's own API.
curl -sf --max-time 60 -X POST "$BASE/v1/execute" \
    -H 'content-type: application/json' \
    -d '{"prompt":"What is 17 * 23?","task_type":"gsm8k"}' \
    -D "$TMP/execute.headers" -o "$TMP/execute.json" || fail "POST /v1/execute"
python3 - "$TMP/execute.json" "$TMP/execute.headers" <<'EOF' || fail "/v1/execute body"
import json, sys
r = json.load(open(sys.argv[1]))
for key in ("response", "model", "request_id"):
    assert isinstance(r.get(key), str) and r[key], f"{key} missing or empty in {r}"
headers = {}
for line in open(sys.argv[2]):
    name, sep, value = line.partition(":")
    if sep:
        headers[name.strip().lower()] = value.strip()
assert "x-process-time" in headers, f"no X-Process-Time header: {headers}"
float(headers["x-process-time"])
print(f"ok   POST /v1/execute: model={r['model']} request_id={r['request_id']} X-Process-Time={headers['x-process-time']}")
EOF

# Variations (both simulated models, judged by the dataset's recorded
# quality) and delayed feedback on the answer.
curl -sf --max-time 60 -X POST "$BASE/v1/execute" \
    -H 'content-type: application/json' \
    -d '{"prompt":"What is 17 * 23?","variations":2}' \
    -o "$TMP/variations.json" || fail "POST /v1/execute with variations"
REQ_ID="$(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
v = r["variations"]
assert len(v) == 2 and r["judge"] == "dataset", r
assert sum(x["selected"] for x in v) == 1, r
print(r["request_id"])
' "$TMP/variations.json")" || fail "/v1/execute variations body"
echo "ok   POST /v1/execute variations=2: request_id=$REQ_ID"
curl -sf --max-time 10 -X POST "$BASE/v1/feedback" -H 'content-type: application/json' \
    -d "{\"request_id\":\"$REQ_ID\",\"thumbs\":\"up\"}" -o "$TMP/feedback.json" || fail "POST /v1/feedback"
python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
assert r["quality"] == 1.0 and r["revisions"] == 1, r
print("ok   POST /v1/feedback:", r["model"], "late" if r["late"] else "in time")
' "$TMP/feedback.json" || fail "/v1/feedback body"

# A body that is not JSON (what a cross-site form can send) is refused.
STATUS="$(curl -s --max-time 10 -o /dev/null -w '%{http_code}' -X POST "$BASE/v1/execute" \
    -H 'content-type: text/plain' -d '{"prompt":"hi"}')"
[[ "$STATUS" == 415 ]] || fail "POST /v1/execute as text/plain answered $STATUS, not 415"
echo "ok   POST /v1/execute as text/plain: 415"

# The OpenAI SDK.
python3 "$ROOT/ci/openai_client_check.py" --base-url "$BASE/v1" || fail "ci/openai_client_check.py"

# An A/B experiment: create, enrol users, read per-arm results, stop, report.
curl -sf --max-time 10 "$BASE/v1/experiments" -H 'content-type: application/json' -o "$TMP/exp.json" -d '{
  "id": "smoke", "unit": "user", "holdout": 0.1,
  "arms": [{"name": "learned", "strategy": {"kind": "learned"}},
           {"name": "cheap", "strategy": {"kind": "cost_optimized"}}]}' || fail "POST /v1/experiments"
python3 - "$BASE" "$ROOT/data/routellm_mmlu_gsm8k.jsonl" <<'EOF' || fail "experiment traffic and results"
import json, sys, urllib.request
base, data = sys.argv[1], sys.argv[2]
def call(path, body=None):
    req = urllib.request.Request(base + path, headers={"content-type": "application/json"},
                                 data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())
rows = [json.loads(l) for _, l in zip(range(200), open(data))]
for i, row in enumerate(rows):
    call("/v1/execute", {"prompt": row["prompt"], "task_type": row["task"], "user_id": f"u{i % 40}"})
res = call("/v1/experiments/smoke")["results"]
arms = {a["arm"]: a for a in res["arms"]}
assert res["requests"] == 200 and {"learned", "cheap"} <= set(arms), res
assert arms["cheap"]["vs_control"]["cost_usd"]["difference"] < 0, arms["cheap"]
stopped = call("/v1/experiments/smoke/stop", {})
assert stopped["status"] == "stopped", stopped
print("ok   /v1/experiments: 200 requests over", sorted(arms), "| cheap - learned cost/request:",
      f'{arms["cheap"]["vs_control"]["cost_usd"]["difference"]:.2e} USD')
EOF
"$BIN" experiment report --url "$BASE" --id smoke --out "$TMP/report" >/dev/null || fail "qroute experiment report --url"
grep -q 'cheap' "$TMP/report/smoke.md" && [[ -s "$TMP/report/smoke.png" ]] || fail "experiment report files"
echo "ok   qroute experiment report: smoke.md, smoke.png"

# Prometheus metrics (saved first: grep -q on a pipe would break it under pipefail).
curl -sf --max-time 10 "$BASE/metrics" -o "$TMP/metrics.txt" || fail "GET /metrics"
python3 - "$TMP/metrics.txt" <<'EOF' || fail "/metrics does not parse as Prometheus text"
import sys
from prometheus_client.parser import text_string_to_metric_families
families = list(text_string_to_metric_families(open(sys.argv[1]).read()))
names = {f.name: f for f in families}
assert "qroute_requests" in names and names["qroute_requests"].type == "counter", sorted(names)
assert names["qroute_cost_usd"].type == "counter", names["qroute_cost_usd"].type
undocumented = [f.name for f in families if not f.documentation]
assert not undocumented, f"families without HELP: {undocumented}"
print(f"ok   /metrics: {len(families)} families parse (prometheus_client), each with HELP and TYPE")
EOF

# The OpenAPI document.
curl -sf --max-time 10 "$BASE/openapi.json" -o "$TMP/openapi.json" || fail "GET /openapi.json"
python3 -m json.tool "$TMP/openapi.json" >/dev/null || fail "/openapi.json is not valid JSON"
python3 - "$TMP/openapi.json" <<'EOF' || fail "/openapi.json content"
import json, sys
d = json.load(open(sys.argv[1]))
assert str(d.get("openapi", "")).startswith("3.1"), d.get("openapi")
assert d["info"]["title"] == "qroute", d["info"]
assert "/v1/chat/completions" in d["paths"], sorted(d["paths"])
print(f"ok   /openapi.json: OpenAPI {d['openapi']}, {len(d['paths'])} paths")
EOF

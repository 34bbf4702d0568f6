#!/usr/bin/env python3
"""Checks that the real `openai` Python SDK works against a running qroute.

    python3 ci/openai_client_check.py --base-url http://127.0.0.1:PORT/v1 [--mock-url URL]

With --mock-url (a `qroute mock-provider` the gateway routes to), also
checks streaming order against the mock's counters, tool calls (whole and
streamed) and JSON mode.

Runs every check, prints one line per check (`ok` or `FAIL`), and exits 1
if any failed. Needs only the `openai` package (pip install openai).
"""

import argparse
import json
import sys
import traceback
import urllib.error
import urllib.request

import openai

PROMPT = [{"role": "user", "content": "What is 17 * 23?"}]


class CheckFailed(Exception):
    pass


def expect(cond, message):
    if not cond:
        raise CheckFailed(message)


def process_time_ok(headers):
    """The X-Process-Time header every response carries: seconds, >= 0."""
    value = headers.get("x-process-time")
    expect(value is not None, "no X-Process-Time header")
    try:
        seconds = float(value)
    except ValueError:
        raise CheckFailed(f"X-Process-Time is not a number: {value!r}")
    expect(seconds >= 0.0, f"X-Process-Time is negative: {value!r}")
    return value


def extension(obj, name):
    """A field the OpenAI SDK's models do not declare (qroute's `qroute`)."""
    value = getattr(obj, name, None)
    if value is None and getattr(obj, "model_extra", None):
        value = obj.model_extra.get(name)
    return value


def check_chat(client):
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=PROMPT)
    header = process_time_ok(raw.headers)
    resp = raw.parse()
    expect(resp.choices, "no choices")
    content = resp.choices[0].message.content
    expect(isinstance(content, str) and content, f"empty content: {content!r}")
    expect(isinstance(resp.model, str) and resp.model, f"empty model: {resp.model!r}")
    expect(resp.model != "auto", "model is 'auto', not the model that answered")
    u = resp.usage
    expect(u is not None, "no usage")
    expect(u.prompt_tokens > 0, f"usage.prompt_tokens = {u.prompt_tokens}")
    expect(u.completion_tokens > 0, f"usage.completion_tokens = {u.completion_tokens}")
    expect(u.total_tokens > 0, f"usage.total_tokens = {u.total_tokens}")
    q = extension(resp, "qroute")
    expect(isinstance(q, dict) and q.get("request_id"), f"no qroute.request_id: {q!r}")
    return f"model={resp.model} tokens={u.total_tokens} X-Process-Time={header} content={content[:40]!r}"


def check_stream(client):
    stream = client.chat.completions.create(
        model="auto",
        messages=PROMPT,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = 0
    parts = []
    finish = None
    usage = None
    ids = set()
    models = set()
    for chunk in stream:
        chunks += 1
        ids.add(chunk.id)
        models.add(chunk.model)
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                parts.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    text = "".join(parts)
    expect(chunks >= 2, f"only {chunks} chunk(s)")
    expect(isinstance(text, str) and text, "the concatenated deltas are empty")
    expect(finish, "no finish_reason arrived")
    expect(len(ids) == 1, f"chunks carry different ids: {sorted(ids)}")
    expect(len(models) == 1 and all(models), f"chunks carry different or empty models: {sorted(models)}")
    expect(usage is not None, "no usage chunk despite include_usage")
    expect(usage.total_tokens > 0, f"usage.total_tokens = {usage.total_tokens}")
    return f"chunks={chunks} finish_reason={finish} model={models.pop()} content={text[:40]!r}"


def check_extra_body(client):
    resp = client.chat.completions.create(model="auto", messages=PROMPT, extra_body={"cost_weight": 2.0})
    content = resp.choices[0].message.content
    expect(isinstance(content, str) and content, f"empty content: {content!r}")
    expect(resp.model, "empty model")
    return f"model={resp.model}"


def http(method, url, body=None, headers=None, timeout=30):
    """(status, headers, body bytes) for a request; HTTP errors are answers, not exceptions."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def concrete_model(base_url):
    status, headers, body = http("GET", f"{base_url}/capabilities")
    expect(status == 200, f"GET /capabilities: HTTP {status}: {body[:200]!r}")
    process_time_ok(headers)
    models = json.loads(body)["models"]
    expect(models, "GET /capabilities lists no models")
    usable = [m for m in models if m.get("breaker") != "open"] or models
    return usable[0]["id"]


def check_pinned(client, base_url):
    model = concrete_model(base_url)
    resp = client.chat.completions.create(model=model, messages=PROMPT)
    expect(resp.model == model, f"asked for {model!r}, answered by {resp.model!r}")
    content = resp.choices[0].message.content
    expect(isinstance(content, str) and content, f"empty content: {content!r}")
    q = extension(resp, "qroute")
    if isinstance(q, dict) and "propensity" in q:
        expect(abs(q["propensity"] - 1.0) < 1e-6, f"a pinned model's propensity is {q['propensity']}, not 1")
    return f"model={model}"


def check_unknown_model(client):
    try:
        client.chat.completions.create(model="no-such-model", messages=PROMPT)
    except openai.NotFoundError as e:
        expect(e.status_code == 404, f"status {e.status_code}")
        body = e.body if isinstance(e.body, dict) else {}
        kind = body.get("type") or (body.get("error") or {}).get("type")
        expect(kind == "not_found", f"error type {kind!r}, body {e.body!r}")
        return f"NotFoundError (HTTP 404, type={kind})"
    except openai.APIStatusError as e:
        raise CheckFailed(f"{type(e).__name__} (HTTP {e.status_code}) instead of NotFoundError: {e.body!r}")
    raise CheckFailed("no error for an unknown model")


def check_malformed(base_url):
    status, headers, body = http(
        "POST",
        f"{base_url}/chat/completions",
        body=b'{"model": "auto", "messages": [',
        headers={"Content-Type": "application/json"},
    )
    expect(status == 400, f"HTTP {status}, not 400: {body[:200]!r}")
    process_time_ok(headers)
    try:
        err = json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        raise CheckFailed(f"not a JSON error body: {body[:200]!r}")
    expect(isinstance(err.get("type"), str) and err["type"], f"no error.type: {err!r}")
    expect(err["type"] == "invalid_request", f"error.type is {err['type']!r}, not 'invalid_request'")
    expect(isinstance(err.get("message"), str) and err["message"], f"no error.message: {err!r}")
    return f"HTTP 400 type={err['type']}"


WEATHER = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
ASK_WEATHER = [{"role": "user", "content": "What is the weather in Paris?"}]


def mock_stats(mock_url):
    with urllib.request.urlopen(f"{mock_url}/mock/stats", timeout=10) as r:
        return json.loads(r.read())


def check_stream_order(client, mock_url):
    """The first token reaches the client before the mock sent its last chunk."""
    stream = client.chat.completions.create(
        model="mock-gpt", messages=[{"role": "user", "content": "Stream me a story."}], stream=True
    )
    finished_at_first = None
    parts = []
    for chunk in stream:
        for choice in chunk.choices:
            if choice.delta is not None and choice.delta.content:
                if finished_at_first is None:
                    finished_at_first = mock_stats(mock_url).get("streams_finished", {}).get("mock-gpt", 0)
                parts.append(choice.delta.content)
    after = mock_stats(mock_url).get("streams_finished", {}).get("mock-gpt", 0)
    expect(finished_at_first is not None, "no content arrived")
    expect(after == finished_at_first + 1, f"the mock finished {after - finished_at_first} stream(s) during this one")
    expect(len(parts) >= 8, f"only {len(parts)} content chunks: not streamed through")
    return f"first token before the upstream's last chunk; {len(parts)} content chunks"


def check_tools(client):
    resp = client.chat.completions.create(model="auto", messages=ASK_WEATHER, tools=WEATHER)
    choice = resp.choices[0]
    expect(choice.finish_reason == "tool_calls", f"finish_reason = {choice.finish_reason!r}")
    calls = choice.message.tool_calls or []
    expect(len(calls) == 1 and calls[0].function.name == "get_weather", f"tool_calls = {calls!r}")
    args = json.loads(calls[0].function.arguments)
    expect(isinstance(args.get("city"), str), f"arguments = {args!r}")
    # The tool's result goes back; the model answers in words.
    followup = ASK_WEATHER + [
        {"role": "assistant", "content": None, "tool_calls": [calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": calls[0].id, "content": "sunny, 21 C"},
    ]
    resp = client.chat.completions.create(model="auto", messages=followup, tools=WEATHER)
    text = resp.choices[0].message.content
    expect(isinstance(text, str) and "sunny" in text, f"the tool result did not come back: {text!r}")
    return f"model={resp.model} call={calls[0].function.name}({calls[0].function.arguments}) then {text[:30]!r}"


def check_streamed_tools(client):
    stream = client.chat.completions.create(model="auto", messages=ASK_WEATHER, tools=WEATHER, stream=True)
    name, arguments, finish = "", "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in (choice.delta.tool_calls or []) if choice.delta else []:
                if call.function is not None:
                    name += call.function.name or ""
                    arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    expect(name == "get_weather", f"streamed tool name = {name!r}")
    expect(isinstance(json.loads(arguments).get("city"), str), f"streamed arguments = {arguments!r}")
    expect(finish == "tool_calls", f"finish_reason = {finish!r}")
    return f"{name}({arguments})"


def check_json_mode(client):
    resp = client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Three colours, as JSON."}],
        response_format={"type": "json_object"},
    )
    content = resp.choices[0].message.content
    value = json.loads(content)
    expect(isinstance(value, dict), f"not a JSON object: {content!r}")
    expect(resp.model == "mock-gpt", f"JSON mode went to {resp.model!r}, which has no JSON mode")
    return f"model={resp.model} content={content[:40]!r}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default="http://127.0.0.1:8080/v1", help="qroute's OpenAI base URL (ending in /v1)")
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds per request")
    ap.add_argument("--mock-url", help="the mock upstream's base URL: adds the streaming, tools and JSON checks")
    args = ap.parse_args()
    base_url = args.base_url.rstrip("/")

    # No SDK retries: the gateway retries upstreams itself, and a flaky
    # answer here should fail the check, not be hidden.
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=args.timeout)
    print(f"openai {openai.__version__} against {base_url}")

    checks = [
        ("chat completion (model=auto)", lambda: check_chat(client)),
        ("streamed chat completion", lambda: check_stream(client)),
        ("extra_body cost_weight=2.0", lambda: check_extra_body(client)),
        ("concrete model from /capabilities", lambda: check_pinned(client, base_url)),
        ("unknown model -> 404", lambda: check_unknown_model(client)),
        ("malformed JSON -> 400", lambda: check_malformed(base_url)),
    ]
    if args.mock_url:
        mock_url = args.mock_url.rstrip("/")
        checks += [
            ("streaming order (first chunk before the upstream's last)", lambda: check_stream_order(client, mock_url)),
            ("tool call round trip", lambda: check_tools(client)),
            ("streamed tool call", lambda: check_streamed_tools(client)),
            ("JSON mode", lambda: check_json_mode(client)),
        ]
    failed = 0
    for name, check in checks:
        try:
            detail = check()
            print(f"ok   {name}: {detail}", flush=True)
        except CheckFailed as e:
            failed += 1
            print(f"FAIL {name}: {e}", flush=True)
        except Exception as e:  # an SDK error, a refused connection, a bug here
            failed += 1
            print(f"FAIL {name}: {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stderr)
    print(f"{len(checks) - failed}/{len(checks)} checks passed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

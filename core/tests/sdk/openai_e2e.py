"""Drives a running Gatekeeper with the official `openai` Python SDK.

usage: openai_e2e.py BASE_URL GOOD_KEY [BAD_KEY]

Exits non-zero (with a traceback) if any expectation fails.
"""
import sys

import openai
from openai import OpenAI

base_url, good_key = sys.argv[1], sys.argv[2]
bad_key = sys.argv[3] if len(sys.argv) > 3 else None
messages = [{"role": "user", "content": "Say hello to the gateway"}]

client = OpenAI(base_url=base_url, api_key=good_key, max_retries=0, timeout=20)

# A normal completion.
r = client.chat.completions.create(model="m", messages=messages)
assert r.choices[0].message.content, r
assert r.usage is not None and r.usage.total_tokens > 0, r.usage
assert r.model == "up-primary", r.model

# A streamed completion, with usage at the end.
text, usage = "", None
stream = client.chat.completions.create(
    model="m", messages=messages, stream=True, stream_options={"include_usage": True}
)
for chunk in stream:
    if chunk.choices:
        text += chunk.choices[0].delta.content or ""
    if chunk.usage is not None:
        usage = chunk.usage
assert text, "empty stream"
assert usage is not None and usage.completion_tokens > 0, usage

# The raw response carries the gateway's headers.
raw = client.chat.completions.with_raw_response.create(model="m", messages=messages)
assert raw.headers.get("x-gatekeeper-provider") == "primary", dict(raw.headers)
assert raw.headers.get("x-request-id"), dict(raw.headers)

# Models list.
ids = [m.id for m in client.models.list()]
assert "m" in ids, ids

# Errors map to the SDK's exception classes.
try:
    client.chat.completions.create(model="no-such-model", messages=messages)
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404

if bad_key is not None:
    bad = OpenAI(base_url=base_url, api_key=bad_key, max_retries=0, timeout=20)
    try:
        bad.chat.completions.create(model="m", messages=messages)
        raise AssertionError("bad key accepted")
    except openai.AuthenticationError as e:
        assert e.status_code == 401, e

print("openai-sdk-e2e: ok")

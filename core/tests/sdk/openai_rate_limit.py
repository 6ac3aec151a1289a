"""Drives a running Gatekeeper with the official `openai` Python SDK until a budget
refuses: the SDK must raise `RateLimitError` with OpenAI's code.

usage: openai_rate_limit.py BASE_URL KEY   (the key allows one request per minute)
"""
import sys

import openai
from openai import OpenAI

base_url, key = sys.argv[1], sys.argv[2]
messages = [{"role": "user", "content": "Say hello to the gateway"}]
client = OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=20)

raw = client.chat.completions.with_raw_response.create(model="m", messages=messages, max_tokens=16)
assert raw.headers.get("x-ratelimit-limit-requests") == "1", dict(raw.headers)
assert raw.headers.get("x-ratelimit-remaining-requests") == "0", dict(raw.headers)
assert raw.parse().choices[0].message.content

try:
    client.chat.completions.create(model="m", messages=messages, max_tokens=16)
    raise AssertionError("the request past rpm was answered")
except openai.RateLimitError as e:
    assert e.status_code == 429, e
    assert e.code == "rate_limit_exceeded", e.body
    assert int(e.response.headers["retry-after"]) >= 1, dict(e.response.headers)

print("openai-sdk-rate-limit: ok")

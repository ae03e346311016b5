"""A provider's Retry-After header, read from the error LiteLLM raises (no server needed here; the end-to-end
tests are in test_real_provider.py and test_faults.py)."""

from __future__ import annotations

import email.utils
import time

import httpx
import pytest

from durable_agent.activities import MAX_RETRY_AFTER_SECONDS, retry_after_seconds


class ProviderError(Exception):
    def __init__(self, headers):
        super().__init__("rate limited")
        self.response = httpx.Response(429, headers=headers)


@pytest.mark.parametrize("headers, expected", [
    ({"Retry-After": "7"}, 7.0),
    ({"retry-after": "2.5"}, 2.5),
    ({"retry-after-ms": "1500", "Retry-After": "9"}, 1.5),  # OpenAI's precise header wins
    ({"Retry-After": "100000"}, MAX_RETRY_AFTER_SECONDS),  # capped
    ({"Retry-After": "-3"}, 0.0),
    ({"Retry-After": "soon"}, None),  # unreadable: the retry policy decides
    ({}, None),
])
def test_retry_after_is_read_from_the_response_headers(headers, expected):
    assert retry_after_seconds(ProviderError(headers)) == expected


def test_an_http_date_means_wait_until_then():
    later = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after_seconds(ProviderError({"Retry-After": later})) <= 30


def test_the_header_is_found_on_the_error_litellm_wrapped():
    inner = Exception("the offline model is down")
    inner.headers = {"Retry-After": "4"}
    try:
        try:
            raise inner
        except Exception:
            raise RuntimeError("litellm.RateLimitError: ...")  # LiteLLM raises its own while handling ours
    except RuntimeError as outer:
        assert retry_after_seconds(outer) == 4.0
    assert retry_after_seconds(RuntimeError("no headers anywhere")) is None

"""The Calls API client against the fake Exotel: the exact form, auth, retries, errors."""

from __future__ import annotations

import pytest

from bot.dialer.exotel_api import (
    BAD_CREDENTIALS,
    ExotelApiError,
    ExotelAuthError,
    ExotelClient,
    ExotelRateLimited,
)
from bot.testing.exotel_api import DEFAULT_KEY, DEFAULT_SID, DEFAULT_TOKEN, FakeExotelApi


async def _no_sleep(_secs: float) -> None:
    return None


def _client(fake: FakeExotelApi, key: str = DEFAULT_KEY, **kw) -> ExotelClient:
    return ExotelClient(DEFAULT_SID, key, DEFAULT_TOKEN, fake.base_url, 5.0, sleep=_no_sleep, **kw)


async def test_flow_mode_sends_exactly_exotels_fields():
    async with FakeExotelApi() as fake, _client(fake) as client:
        placed = await client.connect_call(
            "+919876543210",
            "08047491899",
            app_id="123456",
            custom_field="tok",
            status_callback="https://bot.example/exotel/status/t",
            time_limit=900,
        )
        await fake.wait_idle()
    assert placed.status == "in-progress" and placed.call_sid == fake.calls[0].call_sid
    [request] = fake.requests
    assert request.path == f"/v1/Accounts/{DEFAULT_SID}/Calls/connect.json"
    assert request.content_type == "application/x-www-form-urlencoded"
    assert request.authorized
    assert request.form == {
        "From": "+919876543210",
        "CallerId": "08047491899",
        "Url": f"http://my.exotel.com/{DEFAULT_SID}/exoml/start_voice/123456",
        "CallType": "trans",
        "TimeLimit": "900",
        "TimeOut": "30",
        "CustomField": "tok",
        "StatusCallback": "https://bot.example/exotel/status/t",
        "StatusCallbackEvents[0]": "terminal",
        "StatusCallbackEvents[1]": "answered",
        "StatusCallbackContentType": "application/json",
    }


async def test_connect_voice_ai_mode_streams_without_a_flow():
    async with FakeExotelApi() as fake, _client(fake) as client:
        await client.connect_call(
            "+919876543210", "0804", stream_url="wss://bot/ws?sample-rate=8000"
        )
        await fake.wait_idle()
    form = fake.requests[0].form
    assert form["StreamUrl"] == "wss://bot/ws?sample-rate=8000"
    assert form["StreamType"] == "bidirectional"
    assert "Url" not in form and "CallType" not in form


async def test_custom_field_over_128_chars_is_refused_before_sending():
    async with FakeExotelApi() as fake, _client(fake) as client:
        with pytest.raises(ValueError, match="128"):
            await client.connect_call("+919876543210", "0804", app_id="1", custom_field="x" * 129)
    assert fake.requests == []


async def test_wrong_credentials_give_a_clear_error_and_no_retry():
    async with FakeExotelApi() as fake, _client(fake, key="wrong") as client:
        with pytest.raises(ExotelAuthError) as info:
            await client.connect_call("+919876543210", "0804", app_id="1")
    assert BAD_CREDENTIALS in str(info.value)
    assert info.value.status == 401 and info.value.placed is False
    assert len(fake.requests) == 1 and not fake.requests[0].authorized


async def test_429_is_retried_then_succeeds():
    slept: list[float] = []

    async def sleep(secs: float) -> None:
        slept.append(secs)

    async with FakeExotelApi() as fake:
        fake.rate_limit_first = 2
        async with ExotelClient(
            DEFAULT_SID,
            DEFAULT_KEY,
            DEFAULT_TOKEN,
            fake.base_url,
            5.0,
            sleep=sleep,
            backoff_secs=0.5,
        ) as client:
            placed = await client.connect_call("+919876543210", "0804", app_id="1")
        await fake.wait_idle()
    assert [r.status for r in fake.requests] == [429, 429, 200]
    assert slept == [0.5, 1.0]
    assert placed.call_sid == fake.calls[0].call_sid and len(fake.calls) == 1


async def test_429_every_time_gives_up_after_bounded_attempts():
    async with FakeExotelApi() as fake, _client(fake, max_attempts=3) as client:
        fake.rate_limit_every = 1
        with pytest.raises(ExotelRateLimited):
            await client.connect_call("+919876543210", "0804", app_id="1")
    assert len(fake.requests) == 3 and fake.calls == []


async def test_5xx_is_retried_and_4xx_rest_exception_is_not():
    async with FakeExotelApi() as fake, _client(fake, max_attempts=2) as client:
        fake.fail_status = 500
        with pytest.raises(ExotelApiError, match="HTTP 500: scripted failure"):
            await client.connect_call("+919876543210", "0804", app_id="1")
        assert len(fake.requests) == 2
        fake.fail_status = 400
        with pytest.raises(ExotelApiError, match="refused the call: scripted failure") as info:
            await client.connect_call("+919876543210", "0804", app_id="1")
    assert len(fake.requests) == 3 and info.value.code == "40000" and info.value.placed is False


async def test_unreachable_api_is_a_definite_failure():
    client = ExotelClient(
        DEFAULT_SID, "k", "t", "http://127.0.0.1:9", 2.0, sleep=_no_sleep, max_attempts=2
    )
    async with client:
        with pytest.raises(ExotelApiError, match="cannot reach") as info:
            await client.connect_call("+919876543210", "0804", app_id="1")
    assert info.value.placed is False


def test_missing_credentials_name_the_env_keys():
    with pytest.raises(ValueError, match="EXOTEL_API_TOKEN"):
        ExotelClient("sid", "key", "")

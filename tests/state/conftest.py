"""Fixtures for the state tests: a real redis-server when one is installed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.state.redis_server import RedisServer, redis_process, redis_server_binary

NO_REDIS = "redis-server not on PATH (Debian: apt-get install redis-server)"


@pytest.fixture
def redis_process_handle(tmp_path) -> Iterator[RedisServer]:
    """A running RedisServer that the test may stop and start again."""
    if redis_server_binary() is None:
        print(f"skipped: {NO_REDIS}")
        pytest.skip(NO_REDIS)
    with redis_process(tmp_path) as server:
        yield server


@pytest.fixture
def redis_server(redis_process_handle) -> str:
    """The URL of a redis-server running for this test."""
    return redis_process_handle.url

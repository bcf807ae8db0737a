"""open_store: BOT_STATE_URL to a backend, or a ConfigError that says what to write."""

from __future__ import annotations

import pytest

from bot.config import ConfigError
from bot.state import (
    DEFAULT_SQLITE_FILE,
    MemoryStore,
    RedisStore,
    ResilientStore,
    SQLiteStore,
    open_store,
)


@pytest.mark.parametrize("url", [None, "", "  ", "sqlite://", "sqlite:///"])
async def test_default_is_sqlite_under_the_data_dir(tmp_path, url):
    store = open_store(url, tmp_path / "data")
    try:
        assert isinstance(store, SQLiteStore)
        assert store.path == tmp_path / "data" / DEFAULT_SQLITE_FILE
        assert store.path.exists()
        assert store.healthy() and store.down_for_secs() == 0.0
    finally:
        await store.close()


async def test_sqlite_path(tmp_path):
    store = open_store(f"sqlite://{tmp_path}/elsewhere/s.db", tmp_path / "data")
    try:
        assert isinstance(store, SQLiteStore) and store.path == tmp_path / "elsewhere" / "s.db"
    finally:
        await store.close()


def test_memory(tmp_path):
    assert isinstance(open_store("memory://", tmp_path), MemoryStore)
    assert not list(tmp_path.iterdir())  # no file for the memory store


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6390/2", "rediss://:secret@cache:6380/0"])
async def test_redis_is_wrapped_in_a_resilient_store(tmp_path, url):
    store = open_store(url, tmp_path, down_grace_secs=3.0)
    try:
        assert isinstance(store, ResilientStore) and isinstance(store.inner, RedisStore)
        assert store.down_grace_secs == 3.0
        assert "secret" not in repr(store)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgres://bot:pw@db/state", "unknown store 'postgres'"),
        ("redis://cache:notaport/0", "not a usable Redis URL"),
        ("redis://cache:6379/notadb", "not a usable Redis URL"),
    ],
)
def test_bad_urls_name_the_setting(tmp_path, url, expected):
    with pytest.raises(ConfigError) as caught:
        open_store(url, tmp_path)
    message = str(caught.value)
    assert "BOT_STATE_URL" in message and expected in message
    assert "pw" not in message


def test_unwritable_data_dir_names_it(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigError, match="BOT_DATA_DIR"):
        open_store(None, blocker / "data")

"""``redis://`` and ``rediss://``: state shared by every instance, on ``redis.asyncio``.

Keys are stored as given (callers use ``call:{CallSid}:...``), with their TTL as a Redis expiry.
A queue is a sorted set of item ids scored by due time plus a hash of payloads; the few
operations that touch both run as Lua scripts, so they are atomic and two instances never
take the same item. Both structures of a queue share a hash tag, so they land on one slot.

Every command has a socket and connect timeout (1 s by default) and one outer bound; a server
that is down or slow raises :class:`StateUnavailable` at once rather than hanging a call.
Callers who must not fail on an outage wrap this store in ``ResilientStore``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bot.state.base import QueuedItem, StateStore, StateUnavailable

T = TypeVar("T")

# Key names of queues; keys() leaves them out, so they never show up as plain keys.
QUEUE_KEY_PREFIX = "queue:{"

_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OSError, TimeoutError)

# KEYS: due zset, payload hash. ARGV: item id, payload, due_at.
_ENQUEUE = """
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
return 0
"""

# KEYS: due zset, payload hash. ARGV: now, leased-until, limit. Returns id, due_at, payload...
_TAKE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, ARGV[3])
local out = {}
for i = 1, #due, 2 do
  redis.call('ZADD', KEYS[1], ARGV[2], due[i])
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or ''
end
return out
"""

# KEYS: due zset, payload hash. ARGV: item id, due_at, "1" to replace the payload, payload.
_RESCHEDULE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[4]) end
return 1
"""


def queue_keys(queue: str) -> tuple[str, str]:
    """The Redis keys of a queue: its sorted set of due times and its hash of payloads."""
    return f"{QUEUE_KEY_PREFIX}{queue}}}:due", f"{QUEUE_KEY_PREFIX}{queue}}}:payloads"


def safe_url(url: str) -> str:
    """The URL without its password, for logs."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


def _escape_glob(text: str) -> str:
    """Escape the glob characters of SCAN MATCH, so a prefix matches only itself."""
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStore(StateStore):
    """State in one Redis database, shared by every instance pointed at it."""

    def __init__(
        self,
        url: str,
        *,
        socket_timeout_secs: float = 1.0,
        connect_timeout_secs: float = 1.0,
        op_timeout_secs: float = 2.5,
    ) -> None:
        self._url = safe_url(url)
        db = urlsplit(url).path.strip("/")
        if db and not db.isdigit():
            # redis-py would quietly use database 0 and mix this state with another's.
            raise ValueError(f"the database after the port must be a number, not {db!r}")
        self._op_timeout = op_timeout_secs
        self._redis = aioredis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=socket_timeout_secs,
            socket_connect_timeout=connect_timeout_secs,
            # One immediate retry: a pooled connection that died with a restarted server fails
            # on first use, and the retry reconnects. More would stretch an outage's every call.
            retry=Retry(NoBackoff(), 1),
        )
        self._enqueue = self._redis.register_script(_ENQUEUE)
        self._take_due = self._redis.register_script(_TAKE_DUE)
        self._reschedule = self._redis.register_script(_RESCHEDULE)

    def __repr__(self) -> str:
        return f"RedisStore({self._url!r})"

    async def _run(self, op: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(op, self._op_timeout)
        except _UNAVAILABLE as e:
            raise StateUnavailable(f"redis at {self._url}: {str(e) or 'timed out'}") from e

    async def get(self, key: str) -> str | None:
        return await self._run(self._redis.get(key))

    async def set(self, key: str, value: str, ttl_secs: float | None = None) -> None:
        await self._run(self._redis.set(key, value, px=_millis(ttl_secs)))

    async def claim(self, key: str, value: str, ttl_secs: float | None = None) -> bool:
        return bool(await self._run(self._redis.set(key, value, nx=True, px=_millis(ttl_secs))))

    async def delete(self, key: str) -> None:
        await self._run(self._redis.delete(key))

    async def keys(self, prefix: str) -> list[str]:
        async def scan() -> list[str]:
            found = set()  # SCAN may return a key more than once
            async for key in self._redis.scan_iter(match=_escape_glob(prefix) + "*", count=500):
                if not key.startswith(QUEUE_KEY_PREFIX):
                    found.add(key)
            return list(found)

        return await self._run(scan())

    async def enqueue(self, queue: str, item_id: str, payload: str, due_at: float) -> bool:
        added = await self._run(
            self._enqueue(keys=queue_keys(queue), args=[item_id, payload, due_at])
        )
        return added == 1

    async def take_due(
        self, queue: str, now: float, lease_secs: float, limit: int = 10
    ) -> list[QueuedItem]:
        flat = await self._run(
            self._take_due(keys=queue_keys(queue), args=[now, now + lease_secs, limit])
        )
        return [
            QueuedItem(flat[i], flat[i + 2], float(flat[i + 1])) for i in range(0, len(flat), 3)
        ]

    async def reschedule(
        self, queue: str, item_id: str, due_at: float, payload: str | None = None
    ) -> None:
        replace = "0" if payload is None else "1"
        await self._run(
            self._reschedule(keys=queue_keys(queue), args=[item_id, due_at, replace, payload or ""])
        )

    async def remove(self, queue: str, item_id: str) -> None:
        due_key, payload_key = queue_keys(queue)

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                await pipe.zrem(due_key, item_id).hdel(payload_key, item_id).execute()

        await self._run(op())

    async def items(self, queue: str) -> list[QueuedItem]:
        due_key, payload_key = queue_keys(queue)

        async def op() -> list[QueuedItem]:
            async with self._redis.pipeline(transaction=True) as pipe:
                due, payloads = (
                    await pipe.zrange(due_key, 0, -1, withscores=True)
                    .hgetall(payload_key)
                    .execute()
                )
            return [QueuedItem(item_id, payloads.get(item_id, ""), score) for item_id, score in due]

        return await self._run(op())

    async def close(self) -> None:
        await self._redis.aclose()


def _millis(ttl_secs: float | None) -> int | None:
    """A TTL in whole milliseconds for SET PX (at least 1: Redis refuses 0)."""
    return None if ttl_secs is None else max(1, round(ttl_secs * 1000))

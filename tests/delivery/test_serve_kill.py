"""``python -m bot serve`` killed with an event pending: the restarted server delivers it.

The server runs as a child process on the default SQLite store (BOT_DATA_DIR) with the
fake cloud providers; a Passthru makes it store a ``call.status`` event while the receiver
refuses it; ``kill -9``; a new ``serve`` on the same data dir sends it, with the same id.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path

import httpx
import pytest

from bot.testing.fakes import FakeProviders
from tests.delivery.conftest import SECRET, Receiver, spec_verifies
from tests.delivery.wiring import until

pytestmark = pytest.mark.timeout(40)
ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_serve(env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with httpx.AsyncClient(timeout=1) as client, asyncio.timeout(20):
        while True:
            try:
                if (await client.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                    return child
            except httpx.TransportError:
                pass
            assert child.returncode is None, "serve exited during start"
            await asyncio.sleep(0.1)


async def test_an_event_pending_at_kill_9_is_delivered_after_the_restart(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [503] * 1000
    async with FakeProviders() as fakes:
        env = {
            **os.environ,
            **fakes.env(),
            "BOT_STT": "deepgram",
            "BOT_LLM": "openai",
            "BOT_TTS": "cartesia",
            "HOLDING_MODE": "off",
            "BOT_DATA_DIR": str(tmp_path),
            "WEBHOOK_URL": receiver.url,
            "WEBHOOK_SECRET": SECRET,
            "WEBHOOK_FIRST_RETRY_SECS": "0.2",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("BOT_STATE_URL", None)
        env.pop("BOT_CONFIG", None)
        port = free_port()
        first = await start_serve(env, port)
        try:
            async with httpx.AsyncClient(timeout=5) as client:
                fields = {"CallSid": "CA-kill-9", "Stream[Status]": "completed"}
                await client.post(f"http://127.0.0.1:{port}/exotel/passthru", data=fields)
            await until(lambda: len(receiver.requests) >= 1, 10, "the first attempt")
        finally:
            os.kill(first.pid, signal.SIGKILL)
            assert await first.wait() == -signal.SIGKILL
        refused = len(receiver.requests)
        receiver.statuses = [503] * refused + [200]
        second = await start_serve(env, port)
        try:
            await until(lambda: len(receiver.requests) > refused, 10, "delivery after restart")
        finally:
            second.terminate()
            await second.wait()
    ids = {r.headers["webhook-id"] for r in receiver.requests}
    assert len(ids) == 1
    assert all(spec_verifies(SECRET, r.headers, r.body) for r in receiver.requests)
    assert (tmp_path / "state.sqlite3").exists()

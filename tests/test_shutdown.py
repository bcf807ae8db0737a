"""`python -m bot serve` as a PaaS runs it: SIGTERM drains live calls, then exits.

A second SIGTERM does not cut the drain short; /ready turns 503 at once, /healthz stays 200.
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

from bot.conversation.memory import can_trim
from bot.simulator import CallConfig, ExotelSimulator, Wait, WaitForBot, WaitForBotHangup
from bot.testing import FakeProviders


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_environ(pid: int) -> list[bytes] | None:
    """The environment a process was started (or last exec'd) with, where /proc has it."""
    path = Path(f"/proc/{pid}/environ")
    return path.read_bytes().split(b"\0") if path.exists() else None


async def wait_healthy(base: str, proc: asyncio.subprocess.Process) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.returncode is not None:
                pytest.fail(f"server exited with {proc.returncode}")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    pytest.fail("server did not become healthy")


async def test_sigterm_drains_then_says_goodbye_and_exits(tmp_path):
    async with FakeProviders() as fakes:
        port = free_port()
        env = {
            **os.environ,
            **fakes.env(),
            "BOT_STT": "deepgram",
            "BOT_LLM": "openai",
            "BOT_TTS": "cartesia",
            "SHUTDOWN_DRAIN_SECS": "1.5",
            "HOLDING_MODE": "off",
            # Its own phrase cache: a shared one may hold the goodbye already, and then
            # the fake TTS would never be asked for it.
            "HOLDING_CACHE_DIR": str(tmp_path / "phrases"),
            "LOG_LEVEL": "INFO",
            "BOT_DATA_DIR": str(tmp_path / "data"),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        try:
            await wait_healthy(base, proc)
            environ = process_environ(proc.pid)
            if environ is not None and can_trim():  # re-run on glibc's allocator, same pid
                assert b"PYTHONMALLOC=malloc" in environ
            sim = ExotelSimulator(CallConfig(url=f"ws://127.0.0.1:{port}/exotel/ws"))
            call = asyncio.create_task(
                sim.run([WaitForBot(gap=0.2), Wait(0.5), WaitForBotHangup(timeout=20)])
            )
            await asyncio.sleep(1.0)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)  # repeated: must not cut the drain short
            async with httpx.AsyncClient() as client:
                ready = await client.get(f"{base}/ready")
                health = await client.get(f"{base}/healthz")
            assert ready.status_code == 503 and ready.json()["status"] == "draining"
            assert health.status_code == 200 and health.json()["status"] == "draining"
            refused = await ExotelSimulator(
                CallConfig(url=f"ws://127.0.0.1:{port}/exotel/ws", connect_timeout=3)
            ).run([Wait(0.2)])
            assert refused.connect_error == "HTTP 503"  # on the upgrade, never accept-then-close
            rec = await asyncio.wait_for(call, 30)
            assert await asyncio.wait_for(proc.wait(), 30) == 0
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        output = (await proc.stdout.read()).decode()
    # The live call was not cut: it heard the goodbye to the end, then the bot closed.
    assert rec.closed_by == "bot", output
    spoken = [t for t in fakes.cartesia.transcripts]
    assert any("Goodbye" in t for t in spoken), spoken
    assert rec.utterances[-1].played_secs > 0.5
    assert rec.violations == []
    assert "drain time over" in output and "Traceback" not in output
    assert "SIGTERM again: still draining" in output

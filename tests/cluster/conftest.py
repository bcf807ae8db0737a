"""Fixtures for the cluster tests: fake providers in this process, and a real redis-server,
N bot instances and a real haproxy as child processes (``bot.cli.cluster.LocalCluster``)."""

from __future__ import annotations

import shutil
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from bot.cli.cluster import ClusterSpec, LocalCluster
from bot.testing.fakes import FakeCartesia, FakeOpenAI, FakeProviders
from tests.state.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
MISSING = [name for name in ("redis-server", "haproxy") if shutil.which(name) is None]


@pytest.fixture
def binaries() -> None:
    """Skips the test, saying why, when redis-server or haproxy is missing."""
    if MISSING:
        reason = (
            f"{' and '.join(MISSING)} not on PATH (Debian: apt-get install haproxy "
            "redis-server; macOS: brew install haproxy redis)"
        )
        print(f"skipped: {reason}")
        pytest.skip(reason)


@pytest.fixture
async def fakes() -> AsyncIterator[FakeProviders]:
    """Quick, deterministic providers: a one-word answer, 0.1 s of speech per word."""
    providers = FakeProviders(
        openai=FakeOpenAI(responder=lambda *_: "Sure.", first_token_latency=0.05),
        cartesia=FakeCartesia(seconds_per_word=0.1),
    )
    async with providers:
        yield providers


def energy_bot_argv(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "tests.cluster.energy_bot", "--host", host, "--port", str(port)]


ClusterFactory = Callable[..., AbstractAsyncContextManager[LocalCluster]]


@pytest.fixture
def cluster(binaries: None, fakes: FakeProviders, tmp_path: Path) -> ClusterFactory:
    """``async with cluster(instances=2, BOT_MAX_CALLS="3") as c:`` a running local cluster."""

    @asynccontextmanager
    async def start(instances: int = 2, **env: str) -> AsyncIterator[LocalCluster]:
        base = free_run(instances + 3)
        spec = ClusterSpec(
            instances=instances,
            base_port=base,
            workdir=tmp_path / "cluster",
            instance_argv=energy_bot_argv,
            env={
                **fakes.env(),
                "BOT_STT": "deepgram",
                "BOT_LLM": "openai",
                "BOT_TTS": "cartesia",
                "BOT_GREETING": "Hello.",
                "HOLDING_MODE": "off",
                "TURN_SPECULATIVE": "false",
                "LOG_LEVEL": "INFO",
                "PYTHONPATH": str(ROOT),  # this checkout's bot and tests win
                # Phrases these fakes rendered must not be found by other tests' bots.
                "HOLDING_CACHE_DIR": str(tmp_path / "phrases"),
                "SHUTDOWN_DRAIN_SECS": "20",
                "STATE_DOWN_GRACE_SECS": "1",
                **env,
            },
        )
        async with LocalCluster(spec) as running:
            yield running

    return start


def free_run(count: int) -> int:
    """A port P with P .. P+count-1 free (the cluster's ports are consecutive)."""
    import socket

    for _ in range(100):
        base = free_port()
        if base + count > 65535:
            continue
        try:
            for offset in range(1, count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")

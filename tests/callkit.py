"""Kit for the lifecycle tests (hang-ups, provider faults, fuzzing, soak).

* :func:`bot_under_test`: the real server on loopback with the fake providers, a phrase cache
  rendered without any TTS, and the :class:`~bot.conversation.faults.FaultWatchdog` wired in
  the position the call builds it (last before the output), with test overrides through
  ``bot.telephony.call.make_fault_watchdog``.
* :func:`heard`: what the caller heard, in order, identified from the simulator's recording.
  The fake Cartesia's "speech" is deterministic per word and per word length, and cached
  phrases are rendered here at another word length, so a phrase from the cache and the same
  text from the TTS are told apart.
* :func:`usage` / :func:`settled_usage`: tasks, sockets, file descriptors and RSS of this
  process, to prove a call gives back what it took.
* :class:`CallerSim`: the Exotel simulator with a hang-up that can happen at any moment, not
  only between script steps (mid-utterance, mid-answer).
"""

from __future__ import annotations

import asyncio
import gc
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import psutil
import pytest
from loguru import logger

import bot.telephony.call
from bot.conversation.faults import FaultWatchdog
from bot.conversation.holding import PhraseCache, RenderedPhrase, VoiceId
from bot.providers import SharedResources, choose_providers
from bot.server.app import create_app
from bot.server.runtime import Runtime
from bot.simulator import CallRecording, ExotelSimulator, Hangup
from bot.testing import FakeProviders, synthesize_speech
from bot.testing.localserver import serving
from tests.conftest import energy_vad_factory
from tests.helpers import cloud_settings

SR = 8000
CACHE_SECONDS_PER_WORD = 0.15
"""Word length of cached phrases; the fake Cartesia in these tests uses other lengths."""
CACHE_VOICE = VoiceId("test-cache", "buzz")


# --------------------------------------------------------------------------------------------
# The bot
# --------------------------------------------------------------------------------------------


def phrase_cache(texts: list[str], rate: int = SR) -> PhraseCache:
    """Every text pre-rendered as the fake's buzz speech at CACHE_SECONDS_PER_WORD."""
    cache = PhraseCache(texts)
    for text in texts:
        pcm = synthesize_speech(text, rate, CACHE_SECONDS_PER_WORD).pcm
        cache.put(RenderedPhrase.from_pcm(text, pcm, rate, CACHE_VOICE))
    return cache


@dataclass
class BotUnderTest:
    url: str
    runtime: Runtime
    fakes: FakeProviders
    watchdogs: deque[FaultWatchdog] = field(default_factory=lambda: deque(maxlen=4))

    @property
    def settings(self) -> Any:
        return self.runtime.settings

    def configure(self, **overrides: Any) -> None:
        """Change settings for the next calls (sessions read them when they are built)."""
        self.runtime.settings = self.runtime.settings.model_copy(update=overrides)

    async def idle(self, timeout: float = 10.0) -> None:
        """Wait until no call is live."""
        async with asyncio.timeout(timeout):
            while self.runtime.active_calls:
                await asyncio.sleep(0.02)


def _watchdog_factory(watchdogs: deque[FaultWatchdog], overrides: dict[str, Any]) -> Any:
    """``bot.telephony.call.make_fault_watchdog`` with test overrides, remembering each watchdog."""

    def make(settings: Any, end_call: Any, holding: Any) -> FaultWatchdog:
        say = partial(holding.say, append_to_context=False) if holding else None
        watchdog = FaultWatchdog.from_settings(settings, end_call=end_call, say=say, **overrides)
        watchdogs.append(watchdog)
        return watchdog

    return make


@asynccontextmanager
async def bot_under_test(
    fakes: FakeProviders,
    *,
    watchdog: bool = True,
    cached: list[str] | None = None,
    watchdog_overrides: dict[str, Any] | None = None,
    **settings: Any,
) -> AsyncIterator[BotUnderTest]:
    """The real server on loopback, cloud providers on the fakes, phrases cached.

    ``cached``: texts to pre-render besides the holding phrases, apology and goodbye (the
    greeting is left to the TTS unless listed here).
    """
    s = cloud_settings(fakes, **settings)
    texts = [*s.holding_phrases, s.apology, s.goodbye, *(cached or [])]
    shared = SharedResources()
    shared.phrases = phrase_cache(list(dict.fromkeys(texts)))
    runtime = Runtime(
        settings=s,
        choice=choose_providers(s),
        shared=shared,
        vad_factory=energy_vad_factory,
        keep_finished=4,
    )
    # The last few only (like Runtime.keep_finished): each holds its whole call.
    watchdogs: deque[FaultWatchdog] = deque(maxlen=4)
    with pytest.MonkeyPatch.context() as patch:
        factory = _watchdog_factory(watchdogs, watchdog_overrides or {}) if watchdog else None
        patch.setattr(bot.telephony.call, "make_fault_watchdog", factory or (lambda *_args: None))
        async with serving(create_app(s, runtime=runtime)) as base:
            url = base.replace("http://", "ws://") + "/exotel/ws"
            yield BotUnderTest(url, runtime, fakes, watchdogs)


# --------------------------------------------------------------------------------------------
# What the caller heard
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Heard:
    """One phrase found in the audio the caller's phone played."""

    label: str
    start: float  # seconds on the call timeline
    complete: bool  # its last word was played too


@dataclass(frozen=True)
class Voice:
    """How a text sounds: the TTS (the fake Cartesia's word length) or the cache."""

    text: str
    seconds_per_word: float = CACHE_SECONDS_PER_WORD


def _word(word: str, rate: int, seconds_per_word: float) -> bytes:
    return synthesize_speech(word, rate, seconds_per_word).pcm


def heard(rec: CallRecording, voices: dict[str, Voice]) -> list[Heard]:
    """Every occurrence of each voice's first word in the played audio, in time order."""
    track = rec.bot_audio.tobytes()
    found: list[Heard] = []
    for label, voice in voices.items():
        words = voice.text.split()
        first = _word(words[0], rec.sample_rate, voice.seconds_per_word)
        last = _word(words[-1], rec.sample_rate, voice.seconds_per_word)
        span = len(first) * len(words)
        at = track.find(first)
        while at >= 0:
            complete = track.find(last, at, at + span + len(last)) >= 0
            found.append(Heard(label, at / (2 * rec.sample_rate), complete))
            at = track.find(first, at + len(first))
    return sorted(found, key=lambda h: h.start)


def labels(items: list[Heard]) -> list[str]:
    return [h.label for h in items]


def silences_after_turns(rec: CallRecording) -> list[float]:
    """For each caller utterance: its end of speech -> the next bot audio the caller heard.

    Silence up to the end of the call counts when nothing followed.
    """
    gaps = []
    starts = sorted(c.start for c in rec.chunks if c.played_secs > 0)
    for turn in rec.turns:
        end = turn.speech_end if turn.speech_end is not None else turn.audio_end
        nxt = next((s for s in starts if s >= end - 1e-6), rec.duration_secs)
        gaps.append(nxt - end)
    return gaps


# --------------------------------------------------------------------------------------------
# Resources
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Usage:
    """What this process holds: asyncio tasks, inet sockets, file descriptors, RSS bytes.

    Sockets to or from ``aside`` ports (a fake provider's) are counted apart in
    ``aside_client`` (our side) and left out of ``sockets`` and ``fds``: the fake holds its
    own side of a cancelled request until its scripted delay ends, which is not ours to judge.
    For the same reason the fake OpenAI's request tasks are not counted in ``tasks``.
    """

    tasks: int
    sockets: int
    fds: int
    rss: int
    aside_client: int = 0

    def within(self, baseline: Usage, *, aside_growth: int = 0) -> bool:
        return (
            self.tasks <= baseline.tasks
            and self.sockets <= baseline.sockets
            and self.fds <= baseline.fds
            and self.aside_client <= baseline.aside_client + aside_growth
        )

    def __str__(self) -> str:
        return (
            f"tasks={self.tasks} sockets={self.sockets} fds={self.fds} "
            f"aside_client={self.aside_client} rss={self.rss >> 20}MiB"
        )


def usage(aside: tuple[int, ...] = ()) -> Usage:
    proc = psutil.Process()
    conns = proc.net_connections(kind="inet")
    ours = [c for c in conns if not _touches(c, aside)]
    client = [c for c in conns if c.raddr and c.raddr.port in aside]
    return Usage(
        tasks=sum(1 for task in asyncio.all_tasks() if not _fake_request(task)),
        sockets=len(ours),
        fds=proc.num_fds() - (len(conns) - len(ours)),
        rss=proc.memory_info().rss,
        aside_client=len(client),
    )


def _fake_request(task: asyncio.Task) -> bool:
    """A plain HTTP request being served: in these tests only the fake OpenAI serves those
    (the bot's server serves the call's WebSocket), and the fake finishes a cancelled request
    only when its scripted delay ends."""
    return getattr(task.get_coro(), "__qualname__", "") == "RequestResponseCycle.run_asgi"


def _touches(conn: Any, ports: tuple[int, ...]) -> bool:
    return bool(
        (conn.laddr and conn.laddr.port in ports) or (conn.raddr and conn.raddr.port in ports)
    )


async def settled_usage(
    baseline: Usage, aside: tuple[int, ...] = (), aside_growth: int = 0, timeout: float = 5.0
) -> Usage:
    """Usage once it is back within ``baseline`` (teardown finishes in the background)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        now = usage(aside)
        if now.within(baseline, aside_growth=aside_growth):
            return now
        if asyncio.get_running_loop().time() > deadline:
            gc.collect()
            return usage(aside)
        await asyncio.sleep(0.05)


def open_sockets() -> list[str]:
    """This process's inet sockets, for a failing assertion's message."""
    return sorted(
        f"{c.status} {c.laddr.port if c.laddr else '-'} -> {c.raddr.port if c.raddr else '-'}"
        for c in psutil.Process().net_connections(kind="inet")
    )


def live_tasks() -> list[str]:
    """Names and coroutines of the running tasks, for a failing assertion's message."""
    return sorted(f"{t.get_name()}: {t.get_coro()!r}"[:140] for t in asyncio.all_tasks())


# --------------------------------------------------------------------------------------------
# Logs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    level: str
    name: str
    message: str

    def __str__(self) -> str:
        return f"{self.level} {self.name}: {self.message[:200]}"


@contextmanager
def captured_logs(level: str = "WARNING") -> Iterator[list[LogLine]]:
    """Loguru lines at ``level`` and above while the block runs."""
    lines: list[LogLine] = []

    def sink(message: Any) -> None:
        record = message.record
        lines.append(LogLine(record["level"].name, record["name"] or "", record["message"]))

    handle = logger.add(sink, level=level)
    try:
        yield lines
    finally:
        logger.remove(handle)


def errors(lines: list[LogLine]) -> list[LogLine]:
    return [line for line in lines if line.level in ("ERROR", "CRITICAL")]


# --------------------------------------------------------------------------------------------
# The caller
# --------------------------------------------------------------------------------------------


class CallerSim(ExotelSimulator):
    """The simulator, plus a hang-up at any moment (while a script step is still running).

    Uses the simulator's own hang-up path (the one the ``Hangup`` step runs), so ``stop``
    then a clean close, or a dropped line (1006), are exactly what the script would send.
    """

    async def hang_up_now(self, *, stop: bool) -> None:
        await self._end_call(Hangup(stop=stop))

    def bot_chunks_since(self, t: float) -> int:
        """Bot media chunks that arrived at or after call time ``t``."""
        return sum(1 for c in self.player.chunks if c.arrived >= t)

    async def until(self, predicate: Any, timeout: float = 15.0, what: str = "") -> None:
        """Wait for a condition on the call; fail the test with ``what`` if it never holds."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate():
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out waiting for {what or predicate}")
            await asyncio.sleep(0.02)

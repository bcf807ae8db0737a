"""Process-wide state: settings, chosen providers, shared models, live calls, metrics.

Everything heavy happens in ``Runtime.start`` (process start), never per call on the event
loop: Exotel fails a stream whose handshake takes 10 s, and one call's model load would
freeze every other call's audio.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import WebSocket
from loguru import logger
from starlette.requests import HTTPConnection

from bot.config import Settings
from bot.conversation.holding import start_phrase_cache
from bot.conversation.language import prepare_languages
from bot.conversation.memory import collect_fully_less_often, freeze_startup_heap, release_memory
from bot.observability.metrics import Metrics
from bot.observability.records import watch_call
from bot.providers import ProviderChoice, SharedResources, load_shared_resources
from bot.server.startup import RoomConfigs, load_room_configs
from bot.telephony.call import CallSession, read_handshake

# After the last call ends, wait this long for another before giving memory back.
RELEASE_MEMORY_AFTER_SECS = 1.0

# asyncio.to_thread shares the loop's default pool (6 threads on 2 cores); with several calls
# transcribing, TTS requests queued behind them for ~1 s (offline-models §7.3).
DEFAULT_EXECUTOR_THREADS = 32


def _prewarm() -> None:
    """Load now what the first call would otherwise load on the event loop."""
    import openai.resources.chat.completions  # noqa: F401  (lazy import in the first request)

    from bot.conversation.silero import shared_session

    shared_session()


@dataclass
class Runtime:
    settings: Settings
    choice: ProviderChoice
    shared: SharedResources
    metrics: Metrics = field(default_factory=Metrics)
    # Test and benchmark hooks: a VAD analyzer factory (sample rate -> analyzer) and
    # per-call extra processors / observers.
    vad_factory: Callable[[int], object] | None = None
    calls: dict[int, CallSession] = field(default_factory=dict)
    draining: bool = False
    finished_calls: list[CallSession] = field(default_factory=list)
    keep_finished: int = 0  # how many ended sessions to keep for inspection (tests)
    _release: asyncio.TimerHandle | None = None
    _releasing: asyncio.Task | None = None
    admitted: int = 0  # streams accepted and not yet ended, handshake included
    memory_releases: int = 0  # times memory was given back after the last call ended
    # Every room's parsed configuration (agent, languages, phrases, analysis).
    rooms: RoomConfigs | None = None

    def __post_init__(self) -> None:
        if self.rooms is None:  # tests build a Runtime from settings alone
            self.rooms = load_room_configs(self.settings)
        if self.shared.language_policy is None:
            self.shared.language_policy = self.rooms.languages
            self.shared.phrase_book = self.rooms.phrases

    @classmethod
    async def start(cls, settings: Settings, **kwargs) -> Runtime:
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(DEFAULT_EXECUTOR_THREADS, "bot-worker"))
        rooms = load_room_configs(settings)
        choice = rooms.providers
        logger.info(f"providers: {choice.summary()}")
        await asyncio.to_thread(_prewarm)
        shared = await load_shared_resources(settings, choice)
        shared.phrases = await start_phrase_cache(settings, choice, shared)
        await prepare_languages(settings, choice, shared, rooms)
        runtime = cls(settings=settings, choice=choice, shared=shared, rooms=rooms, **kwargs)
        freeze_startup_heap()
        collect_fully_less_often()
        logger.info(f"ready in {time.monotonic() - started:.2f} s")
        return runtime

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    @property
    def at_capacity(self) -> bool:
        """As many streams admitted (handshaking or live) as ``bot_max_calls`` allows."""
        limit = self.settings.bot_max_calls
        return limit > 0 and self.admitted >= limit

    async def drain(self, drain_secs: float, goodbye_wait_secs: float = 15.0) -> None:
        """Stop taking calls; let live ones finish, then end the rest with the goodbye."""
        self.draining = True
        logger.info(f"draining: {self.active_calls} live calls, up to {drain_secs:.0f} s")
        await self._wait_for_calls(drain_secs)
        if self.calls:
            logger.info(f"drain time over; ending {self.active_calls} calls with the goodbye")
            goodbye = self.settings.goodbye
            await asyncio.gather(
                *(s.end_call("server shutting down", goodbye) for s in list(self.calls.values())),
                return_exceptions=True,
            )
            await self._wait_for_calls(goodbye_wait_secs)
        logger.info(f"drained; {self.active_calls} calls left")

    async def _wait_for_calls(self, secs: float) -> None:
        deadline = time.monotonic() + secs
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def run_call(self, websocket: WebSocket, sample_rate: int) -> None:
        """Handshake, then run the call to its end. Never raises."""
        self.admitted += 1
        try:
            await self._handshake_and_run(websocket, sample_rate)
        finally:
            self.admitted -= 1

    async def _handshake_and_run(self, websocket: WebSocket, sample_rate: int) -> None:
        info = await read_handshake(websocket, sample_rate, self.settings.handshake_timeout_secs)
        if info is None:
            await _close_quietly(websocket)
            return
        with logger.contextualize(call_sid=info.call_sid, stream_sid=info.stream_sid):
            logger.info(
                f"call started: from {info.from_number or '?'} to {info.to_number or '?'}, "
                f"{info.sample_rate} Hz, custom parameters {info.custom_parameters}"
            )
            try:
                session = CallSession(
                    websocket,
                    info,
                    self.settings,
                    self.choice,
                    self.shared,
                    vad_analyzer=self.vad_factory(info.in_rate) if self.vad_factory else None,
                )
            except Exception:
                logger.exception("could not build the call's pipeline")
                await _close_quietly(websocket)
                return
            await self._run_session(session)

    async def _run_session(self, session: CallSession) -> None:
        key = id(session)
        observer = watch_call(session, self.settings, self.metrics)
        self.calls[key] = session
        self.metrics.active_calls.inc()
        if self._release is not None:
            self._release.cancel()
        try:
            await session.run()
        except Exception:
            logger.exception("call ended by an unexpected error")
            session.end_reason = session.end_reason or "internal error"
        finally:
            self.calls.pop(key, None)
            self.metrics.active_calls.dec()
            self._count_call(session)
            await observer.finish(session.end_reason, session.hung_up_by)
            if self.keep_finished:
                self.finished_calls = [*self.finished_calls, session][-self.keep_finished :]
            if not self.calls:
                self._release = asyncio.get_running_loop().call_later(
                    RELEASE_MEMORY_AFTER_SECS, self._release_if_idle
                )

    def _release_if_idle(self) -> None:
        self._release = None
        if not self.calls:
            self.memory_releases += 1
            self._releasing = asyncio.ensure_future(release_memory())

    def _count_call(self, session: CallSession) -> None:
        m = self.metrics
        m.calls_total.labels(
            reason=_reason_label(session.end_reason), by=session.hung_up_by or "unknown"
        ).inc()
        for name, count in session.serializer.counters.items():
            if name.startswith("rejected:"):
                m.inbound_rejected.labels(reason=name.removeprefix("rejected:")).inc(count)
            else:
                m.inbound_events.labels(event=name).inc(count)
        out = session.transport.output()
        for size in out.sent_chunks:
            m.outbound_chunks.labels(bytes=str(size)).inc()
            if not out.chunk_rule_ok(size):
                m.chunk_violations.inc()


def _reason_label(reason: str | None) -> str:
    """Low-cardinality label: the reason up to its first parenthesis."""
    return (reason or "unknown").split("(")[0].strip()[:40]


async def _close_quietly(websocket: WebSocket) -> None:
    try:
        await websocket.close()
    except Exception:
        pass


def runtime_of(connection: HTTPConnection) -> Runtime:
    """The process's runtime, for a route handling ``connection`` (set up by create_app)."""
    return connection.app.state.runtime()

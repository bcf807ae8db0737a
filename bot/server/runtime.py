"""Process-wide state: settings, chosen providers, shared models, live calls, metrics.

Everything heavy happens in ``Runtime.start`` (process start), never per call on the event
loop: Exotel fails a stream whose handshake takes 10 s, and one call's model load would
freeze every other call's audio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fastapi import WebSocket
from loguru import logger
from starlette.requests import HTTPConnection

from bot.agent.session import CallAgent
from bot.agent.transfer import transfer_for
from bot.config import Settings
from bot.conversation.holding import start_phrase_cache
from bot.conversation.language import prepare_languages
from bot.conversation.memory import collect_fully_less_often, freeze_startup_heap, release_memory
from bot.conversation.turn_hybrid import preload_turn_model
from bot.delivery.from_record import CallContext
from bot.delivery.service import PostCall
from bot.dialer.outbound import OutboundCall, outbound_call_for
from bot.observability.metrics import Metrics
from bot.observability.records import watch_call
from bot.providers import ProviderChoice, SharedResources, load_shared_resources
from bot.server.startup import RoomConfigs, load_room_configs
from bot.state import MemoryStore, ResilientStore, StateStore, open_store
from bot.telephony.call import CallInfo, CallSession, read_handshake

# After the last call ends, wait this long for another before giving memory back.
RELEASE_MEMORY_AFTER_SECS = 1.0

# asyncio.to_thread shares the loop's default pool (6 threads on 2 cores); with several calls
# transcribing, TTS requests queued behind them for ~1 s (offline-models §7.3).
DEFAULT_EXECUTOR_THREADS = 32

# Each call's record in the shared store, ``call:{CallSid}:served``: which instance served it,
# when it started and ended. Any instance (and an operator) can see where a call ran and whether
# it ended cleanly; a call whose record never got an end was on an instance that died.
CALL_RECORD_TTL_SECS = 2 * 3600  # Exotel caps a stream at 60 minutes; Passthru comes after
INSTANCE_ID = f"{socket.gethostname()}:{os.getpid()}"  # the pod name on Kubernetes


def served_key(call_sid: str) -> str:
    """``call:{CallSid}:served``."""
    return f"call:{call_sid}:served"


# Why an instance takes no new call; /ready answers 503 with it, an upgrade gets HTTP 503.
READY, DRAINING, FULL, STORE_DOWN = "ready", "draining", "full", "state store down"


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
    # Shared state (a call's transfer for Passthru, its context answer, the outbox, campaigns):
    # opened by ``start`` from BOT_STATE_URL; a runtime built directly (tests) gets a private
    # memory store.
    store: StateStore = field(default_factory=MemoryStore)
    # Test and benchmark hooks: a VAD analyzer factory (sample rate -> analyzer) and
    # per-call extra processors / observers.
    vad_factory: Callable[[int], object] | None = None
    calls: dict[int, CallSession] = field(default_factory=dict)
    draining: bool = False
    finished_calls: list[CallSession] = field(default_factory=list)
    keep_finished: int = 0  # how many ended sessions to keep for inspection (tests)
    _release: asyncio.TimerHandle | None = None
    _releasing: asyncio.Task | None = None
    admitted: int = 0  # call slots reserved: upgrades being accepted, handshakes, live calls
    memory_releases: int = 0  # times memory was given back after the last call ended
    # Run by ``drain`` after the last call, before the process exits: the outbox room adds its
    # flush here (what it cannot deliver stays queued in the shared store for other instances).
    drain_hooks: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    _store_watch: asyncio.Task | None = None
    # Every room's parsed configuration (agent, languages, phrases, analysis).
    rooms: RoomConfigs | None = None
    # The after-call work (webhooks, calls page); started by start (open_delivery), None in
    # tests that build a Runtime by hand without it.
    post_call: PostCall | None = None

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
        if settings.turn_model == "smart-turn":  # ~0.3 s, off the loop, before any call
            await asyncio.to_thread(preload_turn_model)
        shared = await load_shared_resources(settings, choice)
        shared.phrases = await start_phrase_cache(settings, choice, shared)
        await prepare_languages(settings, choice, shared, rooms)
        metrics = kwargs.pop("metrics", None) or Metrics()
        store = kwargs.pop("store", None) or open_runtime_store(settings, metrics)
        runtime = cls(
            settings=settings, choice=choice, shared=shared, metrics=metrics, rooms=rooms, **kwargs
        )
        runtime.open_delivery(store)
        if isinstance(store, ResilientStore):
            # Probes an idle instance's Redis too, so /ready turns 503 without a call failing.
            runtime._store_watch = loop.create_task(store.watch(), name="state-store-watch")
        freeze_startup_heap()
        collect_fully_less_often()
        logger.info(f"ready in {time.monotonic() - started:.2f} s")
        return runtime

    def open_delivery(self, store: StateStore) -> None:
        """Use ``store``, and start the after-call work (outbox worker, retention)."""
        self.store = store
        self.post_call = PostCall.from_settings(
            self.settings,
            store,
            context=CallContext(
                providers={k: getattr(self.choice, k).name for k in ("stt", "llm", "tts")},
                language=self.rooms.languages.starting_language if self.rooms else None,
                greeting=self.settings.bot_greeting,
            ),
            analysis=self.rooms.analysis if self.rooms else None,
            llm_name=self.choice.llm.name,
            on_event=self.metrics.webhook_event,
            transfer_lookup=self._transfer_of,
        )
        if self.post_call.outbox is not None:
            self.metrics.webhook_pending.set_function(self.post_call.outbox.pending)
        self.post_call.start()

    async def _transfer_of(self, call_sid: str) -> dict | None:
        found = await transfer_for(self.store, call_sid)
        return None if found is None else {"reason": found.reason, "department": found.department}

    def publish_call_status(self, fields: dict[str, str]) -> None:
        """Exotel reported on a call (Passthru, or the dialer's status callbacks): send
        ``call.status`` and keep it for the calls page. Returns at once; never raises."""
        if self.post_call is not None and fields.get("CallSid"):
            self.post_call.publish_status(fields)

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    async def stop(self) -> None:
        """Release what ``start`` opened: the after-call work (queued events stay in the store,
        sent after the restart or by another instance), then the state store."""
        if self.post_call is not None:
            await self.post_call.stop()
        if self._store_watch is not None:
            self._store_watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._store_watch
            self._store_watch = None
        await self.store.close()

    @property
    def at_capacity(self) -> bool:
        """As many call slots reserved (accepting, handshaking or live) as the limit allows."""
        limit = self.settings.bot_max_calls
        return limit > 0 and self.admitted >= limit

    def readiness(self) -> str:
        """READY, or why this instance should get no new call (what /ready reports)."""
        if self.draining:
            return DRAINING
        if self.at_capacity:
            return FULL
        if not self.store.healthy(self.settings.state_down_grace_secs):
            return STORE_DOWN
        return READY

    def reserve_slot(self) -> str | None:
        """Take a call slot for an upgrade about to be accepted; None when taken, else why not.

        No await between the check and the count: on the one event loop two racing upgrades
        cannot both take the last slot. The slot is given back by ``release_slot`` (the route,
        when the accept fails) or at the end of ``run_call``. A blind store does not refuse
        calls (they go on without it); /ready steers new ones elsewhere instead.
        """
        if self.draining:
            return DRAINING
        if self.at_capacity:
            return FULL
        self.admitted += 1
        return None

    def release_slot(self) -> None:
        self.admitted = max(0, self.admitted - 1)

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
        for hook in self.drain_hooks:
            try:
                await hook()
            except Exception:
                logger.exception("a drain hook failed; exiting anyway")

    async def _wait_for_calls(self, secs: float) -> None:
        deadline = time.monotonic() + secs
        while self.calls and time.monotonic() < deadline:
            await asyncio.sleep(0.1)

    async def run_call(self, websocket: WebSocket, sample_rate: int) -> None:
        """Handshake, then run the call to its end; frees the slot ``reserve_slot`` took."""
        try:
            await self._handshake_and_run(websocket, sample_rate)
        finally:
            self.release_slot()

    async def _handshake_and_run(self, websocket: WebSocket, sample_rate: int) -> None:
        info = await read_handshake(websocket, sample_rate, self.settings.handshake_timeout_secs)
        if info is None:
            await _close_quietly(websocket)
            return
        # A call the dialer placed: its variables, and the answer gate (bot.dialer.outbound).
        outbound = await outbound_call_for(self.store, info)
        await self._preload_context(info, websocket)
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
                    input_processors=outbound.processors if outbound else None,
                    hold_greeting=outbound is not None,
                    agent_config=self.rooms.agent if self.rooms else None,
                    store=self.store,
                    query=dict(websocket.query_params),
                )
            except Exception:
                logger.exception("could not build the call's pipeline")
                await _close_quietly(websocket)
                return
            if outbound is not None:
                outbound.attach(session)
            await self._run_session(session, outbound)

    async def _preload_context(self, info: CallInfo, websocket: WebSocket) -> None:
        """The context webhook's answer before the call is built: its ``language`` picks the
        call's STT, voice and phrases (the rest of the answer is applied by the call)."""
        config = self.rooms.agent if self.rooms else None
        if config is None or not config.context_url:
            return
        loaded = await CallAgent.preload_context(
            config, info, store=self.store, query=dict(websocket.query_params)
        )
        if loaded is not None and loaded.answer is not None and loaded.answer.language:
            info.context_language = loaded.answer.language

    async def _note_call(self, call_sid: str, record: dict) -> None:
        """Write the call's record; a store that refuses it costs a log line, not the call."""
        try:
            await self.store.set(served_key(call_sid), json.dumps(record), CALL_RECORD_TTL_SECS)
        except Exception as e:  # ResilientStore keeps writes; SQLite may be locked or full
            logger.warning(f"could not record the call in the state store: {e!r}")

    async def _run_session(
        self, session: CallSession, outbound: OutboundCall | None = None
    ) -> None:
        key = id(session)
        observer = watch_call(session, self.settings, self.metrics)
        record = {"instance": INSTANCE_ID, "started_at": time.time()}
        noted = asyncio.create_task(self._note_call(session.info.call_sid, record))
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
            agent = session.agent
            finished = await observer.finish(
                session.end_reason,
                session.hung_up_by,
                agent=agent.record(session.end_reason, session.hung_up_by),
                masked=agent.variables.secrets(),
            )
            if outbound is not None:
                await outbound.finish(time.monotonic() - session.started_at)
            if self.post_call is not None:
                self.post_call.spawn(finished)  # a task: the call's end never waits on it
            await noted  # in order: the end never lands before the start
            record.update(ended_at=time.time(), end_reason=session.end_reason)
            await self._note_call(session.info.call_sid, record)
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


def open_runtime_store(settings: Settings, metrics: Metrics) -> StateStore:
    """The store BOT_STATE_URL names, its write retries counted in ``metrics``."""
    store = open_store(
        settings.bot_state_url,
        settings.bot_data_dir,
        on_retry=metrics.state_write_retries.inc,
        down_grace_secs=settings.state_down_grace_secs,
    )
    logger.info(f"state store: {store!r}")
    return store


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

"""An Exotel stand-in: places a simulated Voicebot call against a bot server and checks it.

Why this exists: there is no phone on a laptop or in CI, and Exotel's own behaviour is only
partly documented. This client plays Exotel's part of the bidirectional Voicebot protocol
(docs/exotel-protocol.md §4-§8, readings of §12) exactly: `connected`, `start`, a never-ending
real-time stream of 100 ms caller `media` frames, `dtmf`, `stop`; and it models Exotel's player
(sequential playout, underruns, `clear`, `mark` echoes) to record what a caller would really hear.

It is also our compliance checker: every frame the bot sends is checked against the protocol
rules in `bot.simulator.protocol`, which imports nothing from `serializers/` or the bot's
transport, so a bug there cannot hide itself here. The script steps and `CallConfig` live in
`bot.simulator.script`, the recording in `bot.simulator.model`, the player in
`bot.simulator.player`.

Typical use::

    rec = await simulate_call(
        CallConfig(url="ws://127.0.0.1:8080/exotel/ws?sample-rate=8000"),
        [Say("hello.wav", label="greeting reply"), BargeIn("stop.wav", after_bot_start=0.8),
         Dtmf("5"), WaitForBot(), Hangup()],
    )
    assert not rec.violations
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from loguru import logger
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from bot.simulator.model import (
    EPSILON,
    CallRecording,
    ClosedBy,
    DtmfRecord,
    MarkRecord,
    MessageRecord,
    Turn,
)
from bot.simulator.player import ExotelPlayer, compute_turns
from bot.simulator.protocol import HANDSHAKE_LIMIT_SECS, check_bot_message
from bot.simulator.script import (
    Action,
    BargeIn,
    CallConfig,
    Dtmf,
    Hangup,
    Say,
    SendRaw,
    Wait,
    WaitForBot,
    WaitForBotHangup,
    load_audio,
    speech_bounds,
    start_message,
)


@dataclass
class _Segment:
    """Caller audio placed on the timeline, waiting to be streamed."""

    start: int  # sample index
    samples: np.ndarray
    done: bool = False

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


class ExotelSimulator:
    """One simulated Exotel call. Single use: `rec = await ExotelSimulator(config).run(script)`."""

    def __init__(self, config: CallConfig) -> None:
        self.config = config
        self.url, self.rate = config.resolved_url_and_rate()
        self.player = ExotelPlayer(
            self.rate,
            idle_secs=config.utterance_idle_secs,
            underrun_tolerance=config.underrun_tolerance_secs,
            marks_after_clear=config.marks_after_clear,
        )
        self._ws: ClientConnection | None = None
        self._loop: asyncio.AbstractEventLoop  # set by run(): the simulator lives on one loop
        self._t0 = 0.0
        self._seq = 0
        self._send_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._closed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pacer: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._rng = np.random.default_rng(config.noise_seed)
        self._segments: list[_Segment] = []
        self._caller_chunks: list[np.ndarray] = []
        self._next_sample = 0
        self._last_speech_end = 0.0
        self._bot_pcm: dict[int, bytes] = {}
        self._hangup: ClosedBy | None = None
        self._hangup_at: float | None = None
        self._closed_at: float | None = None
        self._handshake_secs: float | None = None
        self._connect_error: str | None = None
        self._started_at = time.time()
        self.messages: list[MessageRecord] = []
        self.dtmf: list[DtmfRecord] = []
        self.media_sizes: list[int] = []
        self.turns: list[Turn] = []
        self.violations: list[str] = []
        self.warnings: list[str] = []

    # ---- public --------------------------------------------------------------------------

    def now(self) -> float:
        """Seconds since call start on the loop's monotonic clock."""
        return self._loop.time() - self._t0

    async def run(self, script: Sequence[Action]) -> CallRecording:
        """Place the call, play `script`, hang up if nobody did, and return what happened."""
        clips = {id(a): load_audio(a.audio, self.rate) for a in script if _speaks(a)}
        self._loop = asyncio.get_running_loop()
        self._t0 = self._loop.time()
        try:
            async with asyncio.timeout(self.config.overall_timeout):
                if await self._connect():
                    await self._converse(script, clips)
        except TimeoutError:
            self._warn(f"overall timeout of {self.config.overall_timeout:g} s; call aborted")
            self._drop_line("timeout")
        finally:
            await self._cleanup()
        return self._build_recording()

    # ---- connection ----------------------------------------------------------------------

    async def _connect(self) -> bool:
        headers = {}
        if self.config.auth is not None:
            token = base64.b64encode(":".join(self.config.auth).encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        began = self._loop.time()
        try:
            self._ws = await connect(
                self.url,
                additional_headers=headers,
                open_timeout=self.config.connect_timeout,
                close_timeout=self.config.close_timeout,
                ping_interval=None,
                compression=None,
                max_size=2**24,
            )
        except InvalidStatus as exc:
            self._connect_error = f"HTTP {exc.response.status_code}"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._connect_error = f"{type(exc).__name__}: {exc}"
        self._handshake_secs = self._loop.time() - began
        self._t0 = self._loop.time()
        if self._ws is None:
            logger.info("simulator: connection to {} failed: {}", self.url, self._connect_error)
            self._hangup = "not_connected"
            self._closed.set()
            return False
        if self._handshake_secs > HANDSHAKE_LIMIT_SECS:
            self._violation(f"handshake took {self._handshake_secs:.1f} s (Exotel allows 10 s)")
        logger.info("simulator: call {} connected to {}", self.config.call_sid, self.url)
        return True

    async def _converse(self, script: Sequence[Action], clips: dict[int, np.ndarray]) -> None:
        await self._send({"event": "connected"}, "connected")
        await self._send(start_message(self.config, self.rate, self._next_seq()), "start")
        self._receiver = asyncio.create_task(self._receive())
        self._pacer = asyncio.create_task(self._pace_media())
        await self._run_script(script, clips)
        if not self._closed.is_set():
            await self._end_call(Hangup())

    async def _cleanup(self) -> None:
        """Stop everything we started; bounded, so a stuck bot cannot hang the caller."""
        if not self._closed.is_set():
            self._drop_line(self._hangup or "timeout")
        pending = [t for t in (self._pacer, self._receiver, *self._tasks) if t and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=self.config.close_timeout)

    def _drop_line(self, why: ClosedBy) -> None:
        """Drop TCP without a close frame (what the bot sees as 1006)."""
        if self._hangup is None:
            self._hangup, self._hangup_at = why, self.now()
        if self._ws is not None and self._ws.transport is not None:
            self._ws.transport.abort()
        self._on_closed()

    # ---- outbound ------------------------------------------------------------------------

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def _send_event(self, event: str, body: dict[str, Any]) -> bool:
        """Send an Exotel event with the next sequence number (a string, as DEV-WSP shows)."""
        async with self._send_lock:
            msg = {"event": event, "sequence_number": self._next_seq(), **body}
            return await self._send_locked(json.dumps(msg), event)

    async def _send(self, msg: Mapping[str, Any] | str | bytes, event: str) -> bool:
        async with self._send_lock:
            data = msg if isinstance(msg, str | bytes) else json.dumps(dict(msg))
            return await self._send_locked(data, event)

    async def _send_locked(self, data: str | bytes, event: str) -> bool:
        if self._ws is None or self._closed.is_set():
            return False
        try:
            await self._ws.send(data)
        except ConnectionClosed:
            return False
        size = len(data) if isinstance(data, bytes) else len(data.encode())
        self.messages.append(
            MessageRecord(self.now(), "to_bot", event, size, isinstance(data, bytes))
        )
        return True

    async def _pace_media(self) -> None:
        """Stream caller audio on an absolute 100 ms schedule, forever, like a phone line.

        Chunk n covers [(n-1)*T, n*T) and is sent at n*T with timestamp n*T ms (it exists
        only once it has been spoken), so catching up after a stall never drifts.
        """
        step = self.config.chunk_secs
        per_chunk = round(self.rate * step)
        n = 0
        while not self._closed.is_set():
            n += 1
            await asyncio.sleep(max(0.0, self._t0 + n * step - self._loop.time()))
            pcm = self._render_caller(per_chunk)
            media = {
                "chunk": str(n),
                "timestamp": str(round(n * step * 1000)),
                "payload": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
            }
            if not await self._send_event(
                "media", {"stream_sid": self.config.stream_sid, "media": media}
            ):
                return

    def _render_caller(self, count: int) -> np.ndarray:
        """The next `count` samples of the line: noise or zeros plus any caller speech."""
        a, b = self._next_sample, self._next_sample + count
        if self.config.noise_rms > 0:
            buf = self._rng.normal(0.0, self.config.noise_rms, count)
        else:
            buf = np.zeros(count)
        for seg in self._segments:
            lo, hi = max(a, seg.start), min(b, seg.end)
            if lo < hi:
                buf[lo - a : hi - a] += seg.samples[lo - seg.start : hi - seg.start]
        pcm = np.clip(np.round(buf), -32768, 32767).astype(np.int16)
        self._caller_chunks.append(pcm)
        self._next_sample = b
        finished = [s for s in self._segments if s.end <= b]
        for seg in finished:
            seg.done = True
            self._segments.remove(seg)
        if finished:
            self._notify()
        return pcm

    # ---- inbound -------------------------------------------------------------------------

    async def _receive(self) -> None:
        assert self._ws is not None
        try:
            async for frame in self._ws:
                self._on_frame(frame)
        except ConnectionClosed:
            pass
        finally:
            self._on_closed()

    def _on_frame(self, frame: str | bytes) -> None:
        t = self.now()
        checked = check_bot_message(frame, self.rate, self.config.stream_sid)
        size = len(frame) if isinstance(frame, bytes) else len(frame.encode())
        event = checked.event or ("binary" if isinstance(frame, bytes) else "invalid")
        self.messages.append(MessageRecord(t, "from_bot", event, size, isinstance(frame, bytes)))
        for problem in checked.problems:
            self._violation(problem, t)
        if self._hangup is not None:
            return  # the line is gone; nothing the bot sends now is played
        if checked.pcm is not None:
            self.media_sizes.append(len(checked.pcm))
            if checked.pcm:
                self._on_media(t, checked.pcm)
        elif checked.mark_name is not None:
            mark = self.player.add_mark(t, checked.mark_name)
            self._loop.call_at(self._t0 + mark.due_at, self._fire_mark, mark)
        elif checked.event == "clear":
            for mark in self.player.clear(t):
                self._spawn(self._echo_mark(mark.name))
            self._notify()

    def _on_media(self, t: float, pcm: bytes) -> None:
        chunk = self.player.add_chunk(t, len(pcm))
        self._bot_pcm[chunk.index] = pcm
        self._loop.call_at(self._t0 + chunk.end, self._notify)  # may be the drain waiters want
        self._loop.call_at(self._t0 + chunk.end + self.player.idle_secs, self._check_idle)
        self._notify()

    def _fire_mark(self, mark: MarkRecord) -> None:
        if self._hangup is None and self.player.fire_mark(self.now(), mark):
            self._spawn(self._echo_mark(mark.name))
            self._notify()

    def _check_idle(self) -> None:
        if self._hangup is None and self.player.check_idle(self.now()):
            self._notify()

    async def _echo_mark(self, name: str) -> None:
        body = {"stream_sid": self.config.stream_sid, "mark": {"name": name}}
        await self._send_event("mark", body)

    def _on_closed(self) -> None:
        """Runs once, whoever closed: settle the player and record who ended the call."""
        if self._closed.is_set():
            return
        t = self.now()
        self._closed_at = t
        lost = self.player.close(self._hangup_at if self._hangup_at is not None else t)
        if self._hangup is None:
            self._hangup = "bot"
            if lost > 0.02:
                self._violation(
                    f"bot closed the socket with {lost:.2f} s of its audio unplayed "
                    "(send a mark and wait for its echo before closing, §7)",
                    t,
                )
        self._closed.set()
        self._notify()
        logger.info("simulator: call ended by {} at {:.2f} s", self._hangup, t)

    # ---- the script ----------------------------------------------------------------------

    async def _run_script(self, script: Sequence[Action], clips: dict[int, np.ndarray]) -> None:
        for i, action in enumerate(script):
            if self._closed.is_set():
                self._warn_skipped(script[i:])
                return
            await self._perform(action, clips.get(id(action)))

    def _warn_skipped(self, rest: Sequence[Action]) -> None:
        skipped = [
            type(a).__name__ for a in rest if not isinstance(a, Hangup | WaitForBotHangup | Wait)
        ]
        if skipped:
            self._warn(f"call already closed by {self._hangup}; not performed: {skipped}")

    async def _perform(self, action: Action, clip: np.ndarray | None) -> None:
        match action:
            case Say() | BargeIn():
                assert clip is not None
                await self._speak(action, clip)
            case Dtmf(digit=digit, duration_ms=ms):
                body = {
                    "stream_sid": self.config.stream_sid,
                    "dtmf": {"digit": digit, "duration": str(ms)},
                }
                if await self._send_event("dtmf", body):
                    self.dtmf.append(DtmfRecord(self.now(), digit, ms))
            case Wait(seconds=seconds):
                await self._wait_until(self._closed.is_set, seconds)
            case WaitForBot(gap=gap, timeout=timeout):
                await self._bot_done_time(gap, self._timeout(timeout), "WaitForBot")
            case SendRaw(data=data):
                await self._send(data, _raw_event_name(data))
            case Hangup():
                await self._end_call(action)
            case WaitForBotHangup(timeout=timeout):
                if not await self._wait_until(self._closed.is_set, timeout):
                    self._warn(f"bot did not hang up within {timeout:g} s")

    def _timeout(self, timeout: float | None) -> float:
        return self.config.wait_timeout if timeout is None else timeout

    async def _speak(self, action: Say | BargeIn, clip: np.ndarray) -> None:
        timeout = self._timeout(action.timeout)
        what = f"{type(action).__name__} {action.label!r}"
        if isinstance(action, BargeIn):
            target = await self._barge_in_time(action.after_bot_start, timeout, what)
        elif action.at is not None:
            target = action.at
        elif action.after_bot:
            target = await self._bot_done_time(action.gap, timeout, what)
        else:
            target = self.now()
        seg = self._place(clip, target, action)
        remaining = seg.end / self.rate - self.now() + 2.0
        await self._wait_until(lambda: seg.done, remaining)

    def _place(self, clip: np.ndarray, target: float, action: Say | BargeIn) -> _Segment:
        """Put `clip` on the caller timeline at `target` (or the next unsent sample)."""
        seg = _Segment(max(self._next_sample, round(target * self.rate)), clip)
        self._segments.append(seg)
        start, end = seg.start / self.rate, seg.end / self.rate
        bounds = speech_bounds(clip, self.rate, self.config.speech_rms_threshold)
        if bounds is None:
            self._warn(f"{action.label or 'caller audio'!r} has no speech above the RMS threshold")
        speech = (start + bounds[0], start + bounds[1]) if bounds else (None, None)
        kind: Literal["say", "barge_in"] = "barge_in" if isinstance(action, BargeIn) else "say"
        label = action.label or action.text or f"turn {len(self.turns) + 1}"
        self.turns.append(Turn(len(self.turns), kind, label, action.text, start, end, *speech))
        self._last_speech_end = speech[1] if speech[1] is not None else end
        logger.debug("simulator: caller {} {!r} at {:.2f}-{:.2f} s", kind, label, start, end)
        return seg

    async def _bot_done_time(self, gap: float, timeout: float, what: str) -> float:
        """When the bot's current (or next) utterance finished playing + `gap` of quiet.

        Finished = Exotel's queue drained (a mark at the end is echoed at that very moment), so
        bots without marks work too. If more audio arrives within the gap, keep waiting.
        """
        deadline = self._loop.time() + timeout
        first = self.player.closed_count()  # the utterance playing now, or the next one
        while True:
            done = await self._wait_until(
                lambda: self._bot_finished(first), deadline - self._loop.time()
            )
            if not done:
                if not self._closed.is_set():
                    self._warn(f"{what}: bot still not finished after {timeout:g} s")
                return self.now()
            heard = len(self.player.chunks)
            target = self.player.queue_end + gap
            more = lambda n=heard: len(self.player.chunks) > n  # noqa: E731
            await self._wait_until(more, target - self.now())
            if len(self.player.chunks) == heard:
                return max(target, self.now())

    def _bot_finished(self, first: int) -> bool:
        """Queue drained after an utterance that was playing when we began waiting, came later,
        or answered the caller's last speech."""
        if not self.player.utterances or self.player.queue_end > self.now() + EPSILON:
            return False
        last = self.player.utterances[-1]
        return last.index >= first or last.start >= self._last_speech_end

    def _bot_speaking(self) -> bool:
        return self.player.open is not None and self.player.queue_end > self.now()

    async def _barge_in_time(self, after: float, timeout: float, what: str) -> float:
        """`after` seconds into the utterance playing now (or the next one to start)."""
        if not await self._wait_until(self._bot_speaking, timeout):
            if not self._closed.is_set():
                self._warn(f"{what}: bot did not start speaking within {timeout:g} s")
            return self.now()
        assert self.player.open is not None
        return self.player.open.start + after

    async def _end_call(self, action: Hangup) -> None:
        """Caller hangs up: `stop` + clean close, or drop TCP (no stop, no close frame)."""
        if self._closed.is_set():
            return
        self._hangup, self._hangup_at = ("caller" if action.stop else "caller_abrupt"), self.now()
        if self._pacer is not None:
            self._pacer.cancel()
        if not action.stop:
            self._drop_line("caller_abrupt")
            return
        stop = {
            "call_sid": self.config.call_sid,
            "account_sid": self.config.account_sid,
            "reason": action.reason,
        }
        await self._send_event("stop", {"stream_sid": self.config.stream_sid, "stop": stop})
        assert self._ws is not None
        await self._ws.close()
        await self._wait_until(self._closed.is_set, self.config.close_timeout)

    # ---- plumbing ------------------------------------------------------------------------

    def _notify(self) -> None:
        """Wake every waiter so it re-checks its condition."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until `predicate()` holds; False on timeout or when the call closes first."""
        deadline = self._loop.time() + max(0.0, timeout)
        while not predicate():
            remaining = deadline - self._loop.time()
            if remaining <= 0 or self._closed.is_set():
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return predicate()
        return True

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _violation(self, problem: str, t: float | None = None) -> None:
        text = f"[{self.now() if t is None else t:6.2f} s] {problem}"
        self.violations.append(text)
        logger.warning("simulator: violation {}", text)

    def _warn(self, text: str) -> None:
        self.warnings.append(f"[{self.now():6.2f} s] {text}")
        logger.warning("simulator: {}", text)

    # ---- result --------------------------------------------------------------------------

    def _build_recording(self) -> CallRecording:
        end = self._closed_at if self._closed_at is not None else self.now()
        caller = (
            np.concatenate(self._caller_chunks) if self._caller_chunks else np.zeros(0, np.int16)
        )
        ws = self._ws
        return CallRecording(
            url=self.url,
            sample_rate=self.rate,
            stream_sid=self.config.stream_sid,
            call_sid=self.config.call_sid,
            account_sid=self.config.account_sid,
            started_at=self._started_at,
            duration_secs=end,
            handshake_secs=self._handshake_secs,
            connect_error=self._connect_error,
            closed_by=self._hangup or "timeout",
            close_code=ws.close_code if ws is not None else None,
            close_reason=ws.close_reason if ws is not None else None,
            messages=self.messages,
            chunks=self.player.chunks,
            utterances=self.player.utterances,
            marks=self.player.marks,
            clears=self.player.clears,
            dtmf=self.dtmf,
            turns=compute_turns(
                self.turns, self.player.utterances, self.player.chunks, self.player.clears
            ),
            underruns=self.player.underruns,
            leads=self.player.leads,
            media_sizes=self.media_sizes,
            violations=self.violations,
            script_warnings=self.warnings,
            caller_audio=caller,
            bot_audio=self._bot_track(max(end, len(caller) / self.rate)),
        )

    def _bot_track(self, duration: float) -> np.ndarray:
        """The bot's audio as the caller heard it, placed on the call timeline."""
        last = max((c.played_end for c in self.player.chunks), default=0.0)
        track = np.zeros(round(max(duration, last) * self.rate), np.int16)
        for chunk in self.player.chunks:
            n = round(chunk.played_secs * self.rate)
            if n <= 0:
                continue
            at = min(round(chunk.start * self.rate), len(track))
            samples = np.frombuffer(self._bot_pcm[chunk.index], dtype="<i2")[:n]
            track[at : at + len(samples)] = samples[: len(track) - at]
        return track


def _speaks(action: Action) -> bool:
    return isinstance(action, Say | BargeIn)


def _raw_event_name(data: str | bytes | Mapping[str, Any]) -> str:
    if isinstance(data, Mapping):
        return f"raw:{data.get('event', '?')}"
    return "raw:binary" if isinstance(data, bytes) else "raw:text"


async def simulate_call(config: CallConfig | str, script: Sequence[Action]) -> CallRecording:
    """Convenience: place one call (`config` may be just the URL) and return its recording."""
    if isinstance(config, str):
        config = CallConfig(url=config)
    return await ExotelSimulator(config).run(script)

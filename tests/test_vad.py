"""The shared-session Silero analyzer: per-stream state in shared batches, Pipecat's speech
decisions with an earlier start, and no model run on windows under the volume floor."""

from __future__ import annotations

import asyncio
import itertools
import time

import numpy as np
import pytest
from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams, VADState
from pipecat.audio.vad.vad_controller import VADController
from pipecat.audio.volume import AudioVolumeTracker
from pipecat.frames.frames import InputAudioRawFrame

from bot.conversation.silero import SileroBatch, SileroStream, shared_session
from bot.conversation.vad import SharedSileroVADAnalyzer, _energy, report_onsets
from bot.providers.offline import get_offline_models, synthesize
from tests.conftest import EnergyVAD
from tests.helpers import tone

FRAME = 1600  # Exotel's 100 ms frames at 8 kHz


def speech_then_silence(text: str) -> bytes:
    pcm = synthesize(get_offline_models(), text, 8000)
    return bytes(8000) + pcm + bytes(16000)


def line_noise(secs: float, level: float) -> bytes:
    rng = np.random.default_rng(7)
    return (rng.standard_normal(int(8000 * secs)) * level).astype(np.int16).tobytes()


async def states(analyzer, audio: bytes, frame: int = FRAME) -> list[VADState]:
    analyzer.set_sample_rate(8000)
    return [await analyzer.analyze_audio(audio[i : i + frame]) for i in range(0, len(audio), frame)]


def speech_runs(seq: list[VADState]) -> list[tuple[int, int]]:
    """(first SPEAKING frame, first QUIET frame after it) for each detected utterance."""
    runs, i = [], 0
    for speaking, group in itertools.groupby(seq, key=lambda s: s != VADState.QUIET):
        n = len(list(group))
        if speaking and VADState.SPEAKING in seq[i : i + n]:
            runs.append((seq.index(VADState.SPEAKING, i), i + n))
        i += n
    return runs


async def confidence(batch: SileroBatch, stream: SileroStream, window: bytes) -> float:
    """One window's confidence at 8 kHz; a failed run raises."""
    (answer,) = await asyncio.wait_for(batch.confidences(stream, [window], 8000), 5)
    if isinstance(answer, BaseException):
        raise answer
    return answer


class SlowSession:
    """The shared session, 5 ms slower per run: windows submitted meanwhile queue up."""

    def run(self, *args, **kwargs):
        time.sleep(0.005)
        return shared_session().run(*args, **kwargs)


@pytest.mark.models  # Piper speaks the test audio
async def test_calls_share_model_runs_and_keep_their_own_state():
    question = speech_then_silence("What are your opening hours?")
    # Two callers in step, so their windows meet in the batch; a third one out of step.
    calls = [question, question, speech_then_silence("I would like a refund, please.")]
    alone = [await states(SharedSileroVADAnalyzer(sample_rate=8000), a) for a in calls]
    batch = SileroBatch(SlowSession)
    analyzers = [SharedSileroVADAnalyzer(sample_rate=8000, batch=batch) for _ in calls]
    together = await asyncio.gather(*(states(v, a) for v, a in zip(analyzers, calls, strict=True)))
    assert together == alone
    assert all(speech_runs(s) for s in together)
    assert batch.windows == sum(v.model_windows for v in analyzers)
    # Measured: 129 windows in 85 runs (the callers in step met in every run); one run per
    # window would be 129.
    assert batch.runs <= 0.8 * batch.windows


@pytest.mark.models  # Piper speaks the test audio
async def test_same_utterances_as_pipecat_and_an_earlier_start():
    models = get_offline_models()
    questions = ["Do you deliver to Bangalore on Sundays?", "What are your opening hours?", "Yes."]
    earlier = 0
    for text, noise_level in itertools.product(questions, (0, 30, 100)):
        question = synthesize(models, text, 8000)
        # Two utterances with line noise (or digital silence) between them.
        audio = bytes(8000) + question + line_noise(1.5, noise_level) + question + bytes(16000)
        stock = speech_runs(await states(SileroVADAnalyzer(sample_rate=8000), audio))
        ours = speech_runs(await states(SharedSileroVADAnalyzer(sample_rate=8000), audio))
        assert len(ours) == len(stock) == 2, (text, noise_level)
        for (our_start, our_end), (stock_start, stock_end) in zip(ours, stock, strict=True):
            # The model's state can differ by a window after skipped noise: one frame at most.
            assert our_start <= stock_start + 1, (text, noise_level)
            assert abs(our_end - stock_end) <= 2, (text, noise_level)  # turns end alike
            earlier += stock_start - our_start
    assert earlier >= 6  # the volume no longer lags the onset: ~100 ms earlier on most


@pytest.mark.models  # Piper speaks the test audio
async def test_quiet_windows_skip_the_model():
    batch = SileroBatch()
    analyzer = SharedSileroVADAnalyzer(sample_rate=8000, batch=batch)
    quiet = bytes(8000) + line_noise(2.0, 30)  # digital silence, then -60 dBFS line noise
    assert set(await states(analyzer, quiet)) == {VADState.QUIET}
    assert analyzer.model_windows == 0 and analyzer.quiet_windows > 50
    assert batch.runs == 0  # quiet audio never leaves the event loop

    await states(analyzer, speech_then_silence("Hello, is anyone there?"))
    assert batch.windows == analyzer.model_windows > 0


@pytest.mark.parametrize("rate", [8000, 16000])
def test_the_cheap_volume_bound_is_never_below_the_loudness(rate):
    """Windows whose bound is under the floor skip BS.1770 loudness: the bound must hold."""
    rng = np.random.default_rng(3)
    t = np.arange(rate * 3) / rate
    signals = [rng.standard_normal(rate * 3) * level for level in (3, 30, 300, 3000)] + [
        np.sin(2 * np.pi * f * t) * amp for f in (100, 1000, rate * 0.44) for amp in (50, 5000)
    ]
    for signal in signals:
        audio = np.clip(signal, -32768, 32767).astype(np.int16).tobytes()
        analyzer = SharedSileroVADAnalyzer(sample_rate=rate)
        analyzer.set_sample_rate(rate)
        tracker = AudioVolumeTracker()
        window = analyzer.num_frames_required() * 2
        for i in range(0, len(audio) - window + 1, window):
            piece = audio[i : i + window]
            tracker.update(piece, rate)
            assert analyzer._loudness_upper_bound(_energy(piece)) >= tracker.volume - 1e-9


@pytest.mark.models  # Piper speaks the test audio
async def test_the_turn_ends_sooner_after_the_last_word():
    """Pipecat's volume is the loudness of the last 400 ms, so it stays over the floor for a
    while after the last word; a window that is itself quiet now counts as quiet at once."""
    window = 512  # one 32 ms model window per buffer, so a window's gain is visible
    for text in ("What are your opening hours?", "Yes.", "Do you deliver to Bangalore on Sundays?"):
        audio = speech_then_silence(text)
        stock = speech_runs(await states(SileroVADAnalyzer(sample_rate=8000), audio, window))
        ours = speech_runs(await states(SharedSileroVADAnalyzer(sample_rate=8000), audio, window))
        assert len(ours) == len(stock) == 1, text
        assert stock[0][1] - 4 <= ours[0][1] < stock[0][1], text  # 32 to 96 ms sooner


async def test_a_failed_batch_fails_its_windows_and_the_next_one_runs(monkeypatch):
    """Every call's VAD waits on the batch thread, so an error must reach the waiting windows
    and leave the thread serving."""
    batch = SileroBatch()
    stream = SileroStream(shared_session())
    window = line_noise(0.032, 3000)
    real_judge = batch._judge

    def broken_judge(session, pending):
        monkeypatch.setattr(batch, "_judge", real_judge)  # only this batch fails
        raise RuntimeError("a bug in the batch")

    monkeypatch.setattr(batch, "_judge", broken_judge)
    with pytest.raises(RuntimeError, match="a bug in the batch"):
        await confidence(batch, stream, window)
    assert 0.0 <= await confidence(batch, stream, window) <= 1.0 and batch.runs == 1


async def test_a_failed_request_counts_as_no_speech_and_the_call_goes_on(monkeypatch):
    analyzer = SharedSileroVADAnalyzer(sample_rate=8000, params=VADParams(min_volume=0.1))

    async def broken(*args):
        raise RuntimeError("the batch thread is gone")

    monkeypatch.setattr(analyzer._batch, "confidences", broken)
    assert set(await states(analyzer, line_noise(1.0, 3000))) == {VADState.QUIET}
    assert analyzer.model_windows > 15  # loud windows were asked for, and failed


async def test_windows_of_busy_calls_wait_to_share_a_run_and_a_lone_call_never_waits(
    monkeypatch,
):
    waits: list[float] = []
    sleep = time.sleep
    monkeypatch.setattr(
        "bot.conversation.silero.time.sleep", lambda secs: waits.append(secs) or sleep(secs)
    )
    # A long gather, so the second window surely arrives within it even on a slow machine.
    batch = SileroBatch(gather_secs=0.3)
    one, two = SileroStream(shared_session()), SileroStream(shared_session())
    window = line_noise(0.032, 3000)

    for _ in range(3):  # one call alone: every window runs at once
        await confidence(batch, one, window)
    assert waits == [] and batch.runs == 3

    await confidence(batch, two, window)  # a second call is heard
    runs = batch.runs

    async def later(stream: SileroStream) -> float:
        await asyncio.sleep(0.02)
        return await confidence(batch, stream, window)

    await asyncio.gather(confidence(batch, one, window), later(two))
    assert waits == [0.3]
    assert batch.runs == runs + 1  # both windows in one run


async def test_a_streams_windows_in_one_request_move_its_state_as_one_by_one():
    batch = SileroBatch()
    together, apart = SileroStream(shared_session()), SileroStream(shared_session())
    other = SileroStream(shared_session())  # another call's window, in the same runs
    windows = [line_noise(0.032, level) for level in (300, 3000, 30)]

    answers = await asyncio.wait_for(
        asyncio.gather(
            batch.confidences(together, windows, 8000), confidence(batch, other, windows[1])
        ),
        5,
    )
    one_by_one = [await confidence(batch, apart, w) for w in windows]

    assert answers[0] == one_by_one
    assert np.array_equal(together._state, apart._state)
    assert np.array_equal(together._context, apart._context)


async def test_a_buffer_is_one_request_and_a_reset_inside_it_is_honoured(monkeypatch):
    """Loud line noise: over the volume floor, so the model judges it, and not speech, so
    Pipecat's reset schedule resets the model every 2 s, mostly between two windows of one
    100 ms buffer. The later windows are judged again: the answers are those of an analyzer
    fed one window at a time."""
    noise = line_noise(4.5, 3000)
    heard: dict[str, list[float]] = {}
    requests: dict[str, int] = {}
    resets: dict[str, int] = {}
    judged: dict[str, int] = {}
    for name, frame in (("by window", 512), ("by buffer", FRAME)):
        analyzer = SharedSileroVADAnalyzer(sample_rate=8000, params=VADParams(min_volume=0.1))
        heard[name], requests[name], resets[name] = [], 0, 0
        count_towards_reset = analyzer._count_towards_reset
        confidences = analyzer._batch.confidences

        def note(confidence, name=name, count=count_towards_reset):
            heard[name].append(confidence)
            reset = count(confidence)
            resets[name] += reset
            return reset

        async def request(*args, name=name, confidences=confidences):
            requests[name] += 1
            return await confidences(*args)

        monkeypatch.setattr(analyzer, "_count_towards_reset", note)
        monkeypatch.setattr(analyzer._batch, "confidences", request)
        await states(analyzer, noise, frame)
        monkeypatch.undo()
        judged[name] = analyzer.model_windows

    assert heard["by buffer"] == heard["by window"]
    assert len(heard["by window"]) > 130 and max(heard["by window"]) < 0.1
    assert resets["by buffer"] == resets["by window"] == 2
    assert requests["by window"] == judged["by window"] > 120  # one per window
    assert requests["by buffer"] <= len(noise) // FRAME + 2  # one per buffer (+ 2 resets)


async def test_onsets_are_reported_and_a_short_sound_is_dismissed():
    """The controller reports the first voiced window, and its dismissal when the sound stops
    before start_secs; real speech gets Pipecat's usual start and stop, and no dismissal."""

    # No volume floor: Pipecat's slow-rising volume would hide a short sound altogether.
    params = VADParams(start_secs=0.1, stop_secs=0.2, confidence=0.5, min_volume=0.0)
    vad = EnergyVAD(sample_rate=8000, params=params)
    vad.set_sample_rate(8000)
    controller = report_onsets(VADController(vad))
    events: list[str] = []
    for name in ("on_speech_onset", "on_speech_onset_dismissed"):
        controller.add_event_handler(name, lambda _c, n=name: events.append(n))
    for name in ("on_speech_started", "on_speech_stopped"):
        controller.add_event_handler(name, lambda _c, n=name: events.append(n))

    silence = bytes(3200)
    cough = tone(0.06, 8000).tobytes()  # 60 ms: under start_secs
    speech = tone(0.5, 8000).tobytes()
    for audio in (silence, cough, silence, speech, silence, silence):
        for i in range(0, len(audio), 320):  # 20 ms frames
            await controller.process_frame(InputAudioRawFrame(audio[i : i + 320], 8000, 1))
    assert events == [
        "on_speech_onset",
        "on_speech_onset_dismissed",
        "on_speech_onset",
        "on_speech_started",
        "on_speech_stopped",
    ]

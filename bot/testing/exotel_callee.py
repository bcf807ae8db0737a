"""The callee's side of a dialled call, for :class:`~bot.testing.exotel_api.FakeExotelApi`.

``FakeExotelApi(on_call=SimulatedCallee(ws_url, personas))`` places each call by opening the
Exotel WebSocket to the bot (``start.custom_parameters`` carries ``CustomField``, as the flow
passes it) and playing a persona through the simulator: a person who says "Hello?", a carrier
announcement (English or Hindi), voicemail with its beep, an IVR, silence, or a person who asks
not to be called again.

The fake STT cannot hear words, so every phrase is a pure tone of its own pitch, and
:class:`ToneTranscriber` (the fake Deepgram's ``transcriber``) turns the pitches it finds in a
segment back into the phrases. That keeps concurrent calls apart with no shared script queue:
each call's transcripts come from its own audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bot.simulator import (
    Action,
    CallConfig,
    CallRecording,
    ExotelSimulator,
    Hangup,
    Say,
    Wait,
    WaitForBot,
    WaitForBotHangup,
)
from bot.testing.exotel_api import FakePlacedCall

HELLO = "Hello?"
REPLY = "Yes, tell me."
OPT_OUT = "Please don't call me again."
SWITCHED_OFF = "The number you are calling is switched off."
SWITCHED_OFF_HI = "आप जिस नंबर पर कॉल कर रहे हैं वह अभी बंद है"
BUSY_NOTICE = "The number you are calling is busy on another call, please call after some time."
VOICEMAIL = "Please record your message after the tone."
BEEP = "[beep]"
IVR = "Welcome. For English, press 1. हिंदी के लिए 2 दबाएं."

PHRASES: tuple[str, ...] = (
    HELLO,
    REPLY,
    OPT_OUT,
    SWITCHED_OFF,
    SWITCHED_OFF_HI,
    BUSY_NOTICE,
    VOICEMAIL,
    BEEP,
    IVR,
)
BASE_HZ, STEP_HZ = 400.0, 150.0
AMPLITUDE = 8000.0
MIN_RMS = 300.0


def pitch_of(phrase: str) -> float:
    """The tone that stands for ``phrase`` (each phrase of :data:`PHRASES` has its own)."""
    return BASE_HZ + STEP_HZ * PHRASES.index(phrase)


def tone_for(phrase: str, secs: float, rate: int = 8000) -> np.ndarray:
    """``phrase`` "spoken": ``secs`` of its tone, loud enough for an energy VAD."""
    t = np.arange(int(secs * rate)) / rate
    ramp = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.01) if t.size else t
    return (np.sin(2 * np.pi * pitch_of(phrase) * t) * ramp * AMPLITUDE).astype(np.int16)


class ToneTranscriber:
    """The fake Deepgram's ``transcriber``: the phrases whose tones a segment holds.

    Phrases come out in the order their tones start in the segment; a quiet segment is "".
    """

    def __call__(self, segment: bytes, sample_rate: int) -> str:
        samples = np.frombuffer(segment[: len(segment) - len(segment) % 2], "<i2")
        samples = samples.astype(np.float32)
        if samples.size < sample_rate // 50 or np.sqrt(np.mean(samples**2)) < MIN_RMS / 4:
            return ""
        win = sample_rate // 20  # 50 ms windows: pitch per window, then phrases in order
        found: list[str] = []
        for start in range(0, samples.size - win + 1, win):
            chunk = samples[start : start + win]
            if np.sqrt(np.mean(chunk**2)) < MIN_RMS:
                continue
            spectrum = np.abs(np.fft.rfft(chunk * np.hanning(win)))
            peak = np.fft.rfftfreq(win, 1 / sample_rate)[int(np.argmax(spectrum))]
            index = int(round((peak - BASE_HZ) / STEP_HZ))
            if 0 <= index < len(PHRASES) and abs(peak - pitch_of(PHRASES[index])) < STEP_HZ / 3:
                if not found or found[-1] != PHRASES[index]:
                    found.append(PHRASES[index])
        return " ".join(found)


def _say(phrase: str, secs: float, rate: int, *, at: float | None = None) -> Say:
    return Say(tone_for(phrase, secs, rate), after_bot=False, at=at, label=phrase, text=phrase)


def persona_script(persona: str, rate: int = 8000) -> list[Action]:
    """The callee's steps for ``persona`` (see :data:`PERSONAS`)."""
    if persona == "human":
        return [
            _say(HELLO, 0.5, rate, at=0.3),
            WaitForBot(gap=0.3, timeout=6.0),
            Say(tone_for(REPLY, 0.6, rate), gap=0.3, label=REPLY, text=REPLY, timeout=6.0),
            WaitForBot(gap=0.2, timeout=8.0),
            Hangup(),
        ]
    if persona == "opt_out":
        return [
            _say(HELLO, 0.5, rate, at=0.3),
            WaitForBot(gap=0.3, timeout=6.0),
            Say(tone_for(OPT_OUT, 0.8, rate), gap=0.3, label=OPT_OUT, text=OPT_OUT, timeout=6.0),
            WaitForBotHangup(timeout=10.0),
        ]
    if persona == "silence":
        return [Wait(3.5), Hangup()]
    machine = {
        "switched_off": SWITCHED_OFF,
        "switched_off_hi": SWITCHED_OFF_HI,
        "busy_notice": BUSY_NOTICE,
        "voicemail": VOICEMAIL,
        "ivr": IVR,
    }
    if persona not in machine:
        raise ValueError(f"unknown persona {persona!r}; one of {', '.join(PERSONAS)}")
    steps: list[Action] = [_say(machine[persona], 2.0, rate, at=0.3)]
    if persona == "voicemail":
        steps.append(_say(BEEP, 0.6, rate))
    else:  # announcements repeat until the line is dropped
        steps.append(_say(machine[persona], 2.0, rate, at=3.0))
    # The machine never hangs up: the bot must (the test reads when it did).
    return [*steps, WaitForBotHangup(timeout=12.0)]


PERSONAS: tuple[str, ...] = (
    "human",
    "opt_out",
    "silence",
    "switched_off",
    "switched_off_hi",
    "busy_notice",
    "voicemail",
    "ivr",
)


@dataclass
class SimulatedCallee:
    """``on_call`` for :class:`FakeExotelApi`: plays the persona of each dialled number.

    ``ws_url``: the bot's ``/exotel/ws`` (flow mode: the flow's Voicebot applet streams there);
    a Connect Voice AI request's own ``StreamUrl`` wins. ``recordings`` keeps each call's
    :class:`~bot.simulator.CallRecording` by CallSid.
    """

    ws_url: str
    personas: dict[str, str] = field(default_factory=dict)
    default: str = "human"
    sample_rate: int = 8000
    recordings: dict[str, CallRecording] = field(default_factory=dict)

    async def __call__(self, placed: FakePlacedCall) -> dict[str, Any]:
        persona = self.personas.get(placed.to, self.default)
        config = CallConfig(
            url=placed.form.get("StreamUrl") or self.ws_url,
            sample_rate=self.sample_rate,
            call_sid=placed.call_sid,
            from_number=placed.to,
            to_number=placed.form.get("CallerId", ""),
            custom_parameters={"CustomField": placed.custom_field or ""},
            overall_timeout=30.0,
        )
        recording = await ExotelSimulator(config).run(persona_script(persona, self.sample_rate))
        self.recordings[placed.call_sid] = recording
        return {"ConversationDuration": round(recording.duration_secs)}


def bot_hung_up(recording: CallRecording) -> bool:
    """Whether the bot, not the callee, closed the call."""
    return recording.closed_by == "bot"

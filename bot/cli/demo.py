"""``python -m bot demo`` and ``python -m bot call``: place a simulated Exotel call and report.

``demo`` starts the real server (``python -m bot serve``) on a loopback port with the
configured providers (the offline set on a machine with no keys), calls it with questions it
speaks with the offline voice, and prints the per-turn table and Exotel compliance summary
from the simulator's recording joined with the server's call record (what the bot heard and
answered). ``call`` does the same against any running bot, local or deployed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bot.simulator import (
    Action,
    BargeIn,
    CallConfig,
    CallRecording,
    ExotelSimulator,
    Hangup,
    Say,
    WaitForBot,
    WaitForBotHangup,
)
from bot.simulator.report import save_report

DEMO_QUESTIONS = (
    "Hello. What are your opening hours?",
    "I want to return my order. How do refunds work?",
)
DEMO_BARGE_IN = "Sorry, where is your office?"
DEMO_GOODBYE = "That's all, thank you. Bye."
# The Hindi call (``--lang hi-IN``): short questions with the words callers borrow from
# English. The offline Whisper base mishears most of espeak-ng's robotic Hindi (README, "What
# offline Hindi can and cannot do"): expect the apology for most turns, the goodbye's "bye".
HINDI_QUESTIONS = ("नमस्ते", "मुझे रिफ़ंड चाहिए")
HINDI_BARGE_IN = "आपका ऑफ़िस कहाँ है?"
HINDI_GOODBYE = "बस इतना ही, धन्यवाद। बाय।"
# A Hindi demo call is offline end to end: the multilingual Whisper base, the Hindi intents,
# espeak-ng's Hindi voice.
HINDI_ENV = {
    "AGENT_LANGUAGE": "hi-IN",
    "AGENT_LANGUAGES": "hi-IN,en-IN",
    "BOT_STT": "whisper",
    "BOT_LLM": "scripted",
    "BOT_TTS": "piper",
}
SERVER_START_SECS = 120.0


def speech(texts: list[str], rate: int, language: str = "en-IN") -> list[np.ndarray]:
    """Caller audio for ``texts``, spoken by the offline voice (varied, like a person);
    Hindi by espeak-ng's Hindi voice."""
    if language == "hi-IN":
        from bot.providers.offline_hindi import espeak_pcm

        return [np.frombuffer(espeak_pcm(t, rate=rate), np.int16) for t in texts]
    from bot.providers.offline import get_offline_models, synthesize

    models = get_offline_models()
    return [np.frombuffer(synthesize(models, t, rate, varied=True), np.int16) for t in texts]


def demo_script(rate: int, language: str = "en-IN") -> list[Action]:
    """Greeting; two questions; a barge-in on the second answer; goodbye; the bot hangs up."""
    hindi = language == "hi-IN"
    questions = HINDI_QUESTIONS if hindi else DEMO_QUESTIONS
    barge_text, bye_text = (
        (HINDI_BARGE_IN, HINDI_GOODBYE) if hindi else (DEMO_BARGE_IN, DEMO_GOODBYE)
    )
    q1, q2, barge, bye = speech([*questions, barge_text, bye_text], rate, language)
    labels = ("hello", "refunds") if hindi else ("hours", "refunds")
    return [
        WaitForBot(gap=0.4),
        Say(q1, gap=0.6, label=labels[0], text=questions[0]),
        Say(q2, gap=0.6, label=labels[1], text=questions[1]),
        BargeIn(barge, after_bot_start=2.0, label="barge-in", text=barge_text),
        Say(bye, gap=0.6, label="goodbye", text=bye_text),
        WaitForBotHangup(timeout=20),
    ]


def call_script(clips: list[tuple[np.ndarray, str]]) -> list[Action]:
    actions: list[Action] = [WaitForBot(gap=0.4)]
    actions += [Say(audio, gap=0.6, label=label[:24], text=label) for audio, label in clips]
    return [*actions, WaitForBot(gap=1.0), Hangup()]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _wait_healthy(base: str, server: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_SECS
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            if server.returncode is not None:
                raise RuntimeError(f"the server exited ({server.returncode}); see {log}")
            try:
                if (await client.get(f"{base}/healthz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the server did not start within {SERVER_START_SECS:.0f} s; see {log}")


async def _stop(server: asyncio.subprocess.Process) -> None:
    if server.returncode is None:
        server.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(server.wait(), 20)
        except TimeoutError:
            server.kill()
            await server.wait()


def _find_record(records: Path, call_sid: str) -> dict | None:
    from bot.observability.records import load_record

    for path in sorted(records.glob(f"*/{call_sid}*.json")):
        return load_record(path)
    return None


def transcript_by_time(rec: CallRecording, record: dict) -> list[dict]:
    """The server's turns joined to the caller's utterances by time, not by index.

    The server may see more turns than the caller made (a pause splits one, a noise blip
    makes an empty one), so each caller utterance takes every server turn that ended before
    the next utterance began: what was heard joined, the last answer given.
    """
    starts = [t.audio_start for t in rec.turns] + [float("inf")]
    notes = []
    for i in range(len(rec.turns)):
        mine = [
            t
            for t in record.get("turns", [])
            if t.get("turn_end") is not None and starts[i] <= t["turn_end"] < starts[i + 1]
        ]
        answers = [t["answered"] for t in mine if t.get("answered")]
        notes.append(
            {
                "heard": " ".join(t["heard"] for t in mine if t.get("heard")) or None,
                "answered": answers[-1] if answers else None,
                "holding_phrase": any(t.get("holding_phrase") for t in mine),
            }
        )
    return notes


def _print_and_save(rec: CallRecording, out: Path, record: dict | None) -> dict[str, Path]:
    from bot.simulator.from_record import record_annotations

    transcript = transcript_by_time(rec, record) if record else None
    annotations = record_annotations(record) if record else None
    files = save_report(rec, out, transcript=transcript, annotations=annotations)
    print(files["report"].read_text(encoding="utf-8"), end="")
    for kind in ("wav", "png", "json"):
        print(f"  {kind}: {files[kind]}")
    return files


async def run_demo(out: Path, rate: int, language: str = "en-IN") -> int:
    port, log_path = _free_port(), out / "server.log"
    records = out / "records"
    env = {**os.environ, "CALL_RECORDS_DIR": str(records), "LOG_LEVEL": "INFO"}
    if language == "hi-IN":
        env.update(HINDI_ENV)
    print(f"Starting the bot: python -m bot serve --port {port}  (log: {log_path})")
    with _open_log(log_path) as log:
        server = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
            env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            script = await asyncio.to_thread(demo_script, rate, language)
            await _wait_healthy(f"http://127.0.0.1:{port}", server, log_path)
            url = f"ws://127.0.0.1:{port}/exotel/ws?sample-rate={rate}"
            print(f"Calling {url} as Exotel would ...\n")
            config = CallConfig(url=url, wait_timeout=30, custom_parameters={"lang": language})
            rec = await ExotelSimulator(config).run(script)
            await asyncio.sleep(1.0)  # the server writes the call record as the call ends
        finally:
            await _stop(server)
    _print_and_save(rec, out, _find_record(records, rec.call_sid))
    return 0 if not rec.violations and rec.connect_error is None else 1


async def run_call(args) -> int:
    rate = args.sample_rate
    clips = [(_load_wav(Path(p), rate), Path(p).name) for p in args.wav or []]
    if args.say:
        clips += list(zip(speech(args.say, rate), args.say, strict=True))
    if not clips:
        print("give the caller something to say: --wav FILE or --say TEXT", file=sys.stderr)
        return 2
    auth = tuple(args.auth.split(":", 1)) if args.auth else None
    config = CallConfig(url=args.url, sample_rate=rate, auth=auth, wait_timeout=30)
    rec = await ExotelSimulator(config).run(call_script(clips))
    if rec.connect_error:
        print(f"could not connect: {rec.connect_error}", file=sys.stderr)
        return 1
    _print_and_save(rec, Path(args.out), None)
    return 0 if not rec.violations else 1


def _open_log(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "w")  # noqa: SIM115 - closed by the caller's with-block


def _load_wav(path: Path, rate: int) -> np.ndarray:
    from bot.simulator import load_audio

    return load_audio(path, rate)


def demo_main(out: str, rate: int, language: str = "en-IN") -> int:
    from bot.languages import normalise_language

    language = normalise_language(language, key="--lang", allow_auto=False)
    if language not in ("en-IN", "hi-IN"):
        print("the offline demo speaks en-IN or hi-IN", file=sys.stderr)
        return 2
    return asyncio.run(run_demo(Path(out), rate, language))


def call_main(args) -> int:
    return asyncio.run(run_call(args))

"""What offline Hindi can and cannot do, measured on espeak-ng-made Hindi (README numbers).

    python bench/offline_hindi.py

Caller audio: each question spoken by espeak-ng's Hindi voice (and English ones by Piper),
taken down to 8 kHz as a phone line carries it. Measured with the multilingual Whisper base,
greedy decoding without temperature fallback (as the bot decodes Hindi), 2 CPU threads:

* language ID: Whisper's guess restricted to {hi, en} at p >= 0.7 (bot.languages.policy), on
  utterances of 3 s or more (shorter ones are left to the words);
* intent hit rate: the Hindi transcript matched against bot/data/knowledge.hi-IN.toml;
* real-time factor: transcription seconds per second of audio.
"""

from __future__ import annotations

import time

import numpy as np

from bot.providers.offline import _resample_once, get_offline_models, synthesize
from bot.providers.offline_hindi import (
    HINDI_DECODING,
    espeak_pcm,
    get_hindi_models,
    restricted_language,
)
from bot.providers.scripted import load_knowledge

HINDI = (
    ("नमस्ते। आप कितने बजे खुलते हैं और कितने बजे बंद होते हैं?", "hours"),
    ("मुझे अपना ऑर्डर वापस करना है, रिफ़ंड कैसे मिलेगा?", "refund"),
    ("मेरा ऑर्डर अभी तक नहीं आया, डिलीवरी कब होगी?", "order_status"),
    ("माफ़ कीजिए, आपका ऑफ़िस कहाँ है? पता बताइए।", "address"),
    ("आपके प्लान की कीमत क्या है, कितने रुपये लगते हैं?", "pricing"),
    ("मुझे किसी एजेंट से बात करनी है, शिकायत करनी है।", "agent"),
    ("बस इतना ही, धन्यवाद। अलविदा।", "goodbye"),
    ("रविवार को आप खुले रहते हैं क्या?", "hours"),
    ("नमस्ते", "hello"),
    ("मुझे रिफ़ंड चाहिए", "refund"),
)
ENGLISH = (  # long enough (3 s or more) for the language guess
    "Hello there, could you please tell me what your opening hours are on a Saturday?",
    "I would like to return the order I received last week and get a refund, please.",
    "Where exactly is your office? Please tell me the full address and a landmark.",
    "How much does the premium plan cost every month, and is delivery included in it?",
)
RATE = 8000


def _float16k(pcm8k: bytes) -> np.ndarray:
    return np.frombuffer(_resample_once(pcm8k, RATE, 16000), np.int16).astype(np.float32) / 32768


def main() -> None:
    whisper = get_hindi_models(cpu_threads=2).whisper
    knowledge = load_knowledge("bot/data/knowledge.hi-IN.toml")
    piper = get_offline_models()
    clips = [(_float16k(espeak_pcm(t, rate=RATE)), "hi", t, i) for t, i in HINDI]
    clips += [(_float16k(synthesize(piper, t, RATE)), "en", t, None) for t in ENGLISH]
    detected = {"hi": [0, 0], "en": [0, 0]}  # right, tried
    hits = 0
    busy = audio = 0.0
    for samples, truth, _text, intent in clips:
        seconds = len(samples) / 16000
        started = time.perf_counter()
        if seconds >= 3.0:
            _, info = whisper.transcribe(samples, language=None, beam_size=1, **HINDI_DECODING)
            guess, p = restricted_language(info, ("en", "hi"))
            detected[truth][0] += guess == truth and p >= 0.7
            detected[truth][1] += 1
        if truth == "hi":
            segments, _ = whisper.transcribe(
                samples,
                language="hi",
                beam_size=1,
                condition_on_previous_text=False,
                **HINDI_DECODING,
            )
            heard = " ".join(s.text.strip() for s in segments)
            got = knowledge.match(heard).name
            hits += got == intent
            print(f"{seconds:4.1f} s  {intent:12} -> {got:12} heard {heard[:60]!r}")
        busy += time.perf_counter() - started
        audio += seconds
    for language, (right, tried) in detected.items():
        print(f"language ID {language} (>= 3 s, p >= 0.7): {right}/{tried}")
    print(f"Hindi intents matched: {hits}/{len(HINDI)}")
    print(f"real-time factor: {busy / audio:.2f}")


if __name__ == "__main__":
    main()

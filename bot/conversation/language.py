"""One call's language: chosen at stream start, followed turn by turn, applied between turns.

``start_call_language`` picks the call's language (the ``lang`` custom parameter, the stream
URL's ``lang`` query, the context webhook's ``language``, else the configured default) and
builds the call's :class:`CallLanguage` state with a ``bot.languages.LanguageTracker``.

A call whose language can change (``auto``) gets a :class:`LanguageSwitcher` between the user
aggregator and the LLM. It sees each committed user turn (``LLMContextUserTurnFrame``, pushed
before the context that runs the LLM), asks the tracker, and on a switch changes, before the
reply is asked for: the LLM's language line, the STT's language, the TTS voice and language,
the holding phrases and the turn-taking words. Nothing changes inside an utterance. A call
in a fixed language (every English call) gets no switcher and no per-turn work.

Numbers are read the Indian way before every TTS (``normalise_for_speech``): a TTS text
transform that returns at once when a sentence has no digit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    Frame,
    LLMContextUserTurnFrame,
    LLMUpdateSettingsFrame,
    STTUpdateSettingsFrame,
    TranscriptionFrame,
    TTSUpdateSettingsFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import LLMSettings

from bot.config import Settings
from bot.languages import (
    DEFAULT_PHRASES,
    CallLanguage,
    LanguageDecision,
    LanguagePolicy,
    LanguageTracker,
    PhraseBook,
    Phrases,
    normalise_for_speech,
)
from bot.providers.languages import ENGLISH, call_system_prompt, switch_deltas


def english_phrases(settings: Settings, book: PhraseBook | None) -> Phrases:
    """English as today: the ``BOT_GREETING`` / ``GOODBYE`` / ... settings, except where the
    config's ``[phrases.en-IN]`` replaced a text (then that replacement)."""
    from bot.conversation.holding import DEFAULT_HOLDING_PHRASES

    today = Phrases(
        greeting=settings.bot_greeting,
        holding=tuple(settings.holding_phrases or DEFAULT_HOLDING_PHRASES),
        idle_prompt=settings.idle_prompt,
        apology=settings.apology,
        goodbye=settings.goodbye,
        transfer=DEFAULT_PHRASES[ENGLISH].transfer,
        collect_digits=DEFAULT_PHRASES[ENGLISH].collect_digits,
    )
    if book is None:
        return today
    configured, default = book.for_language(ENGLISH), DEFAULT_PHRASES[ENGLISH]
    changed = {
        f.name: getattr(configured, f.name)
        for f in fields(Phrases)
        if getattr(configured, f.name) != getattr(default, f.name)
    }
    return replace(today, **changed)


def phrases_for(language: str, settings: Settings, book: PhraseBook | None) -> Phrases:
    if language == ENGLISH:
        return english_phrases(settings, book)
    return (book or PhraseBook()).for_language(language)


@dataclass
class CallLanguageState:
    """The language of one call, now and turn by turn (``turns[].language`` of the record)."""

    choice: CallLanguage
    tracker: LanguageTracker
    settings: Settings
    book: PhraseBook | None = None
    phrases: Phrases = field(init=False)
    _turn_languages: dict[str, str] = field(default_factory=dict)
    # The call's own prompt (the agent's, variables rendered) the language line is added to;
    # None: the configured one.
    base_prompt: str | None = None

    def __post_init__(self) -> None:
        self.phrases = phrases_for(self.language, self.settings, self.book)

    @property
    def language(self) -> str:
        return self.tracker.language

    @property
    def auto(self) -> bool:
        return self.choice.auto

    def system_prompt(self) -> str:
        """The LLM's instruction now: the call's prompt with its language line."""
        return call_system_prompt(
            self.settings, self.prompt_language, auto=self.auto, base=self.base_prompt
        )

    @property
    def prompt_language(self) -> str | None:
        """The language line's language; None keeps an English-only call's prompt as today."""
        return None if self.language == ENGLISH and not self.auto else self.language

    def user_turn(
        self, text: str, stt_language: str | None = None, stt_confidence: float | None = None
    ) -> LanguageDecision:
        decision = self.tracker.user_turn(
            text, stt_language=stt_language, stt_confidence=stt_confidence
        )
        self._turn_languages[text.strip()] = self.tracker.turns[-1].language
        if decision.switched:
            self.phrases = phrases_for(decision.language, self.settings, self.book)
        return decision

    def language_of_turn(self, heard: str) -> str:
        """What a recorded turn was spoken in: the tracker's verdict for its words, else the
        call's language (a fixed-language call, or a turn without words)."""
        if not self.auto:
            return self.language
        return self._turn_languages.get(heard.strip(), self.language)

    def speakable(self, text: str) -> str:
        """``text`` with its numbers in words, in the call's current language."""
        return normalise_for_speech(text, self.language)


def start_call_language(
    settings: Settings,
    policy: LanguagePolicy | None,
    book: PhraseBook | None,
    *,
    custom_parameters: Mapping[str, Any] | None = None,
    query: Mapping[str, Any] | None = None,
    context_language: Any = None,
    call_id: str = "",
) -> CallLanguageState:
    """The call's language state at stream start (see the module docstring)."""
    policy = policy or LanguagePolicy.from_settings(settings)
    choice = policy.choose(
        custom_parameters=custom_parameters,
        query=query,
        context_language=context_language,  # the agent room's context answer, when it has one
        call_id=call_id,
    )
    tracker = LanguageTracker(choice.language, choice.allowed, auto=choice.auto, call_id=call_id)
    if choice.source != "config" or choice.language != ENGLISH:
        logger.info(
            f"call language {choice.language}{' (auto)' if choice.auto else ''} "
            f"from the {choice.source}"
        )
    return CallLanguageState(choice, tracker, settings, book)


def add_number_reading(tts: Any, state: CallLanguageState) -> None:
    """Read numbers the Indian way before this TTS speaks (a text transform on every text)."""

    async def speakable(text: str, _text_type: str) -> str:
        return state.speakable(text)

    tts.add_text_transformer(speakable, "*")


def _stt_hint(frame: TranscriptionFrame) -> tuple[str | None, float | None]:
    """The language an STT detected for a transcript and its probability, when it says."""
    language = getattr(frame.language, "value", frame.language)
    result = frame.result
    probability = None
    if isinstance(result, Mapping):  # Sarvam: the message, with the probability in data
        data = result.get("data")
        probability = result.get("language_probability")
        if probability is None and isinstance(data, Mapping):
            probability = data.get("language_probability")
    else:
        probability = getattr(result, "language_probability", None)
    return (str(language) if language else None), probability


class TranscriptLanguageTap(FrameProcessor):
    """Between the STT and the user aggregator of an ``auto`` call: remembers the language the
    STT detected for the turn's transcripts (Whisper, Sarvam), for the switcher."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(enable_direct_mode=True, **kwargs)
        self.language: str | None = None
        self.probability: float | None = None

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, TranscriptionFrame):
            language, probability = _stt_hint(frame)
            if language and probability is not None:
                self.language, self.probability = language, probability
        await self.push_frame(frame, direction)

    def take(self) -> tuple[str | None, float | None]:
        hint = (self.language, self.probability)
        self.language = self.probability = None
        return hint


@dataclass
class SwitchTargets:
    """What a switch changes, bound once the call's pipeline is built."""

    stt: Any = None
    llm: Any = None
    tts: Any = None
    holding: Any = None
    turn_strategies: list[Any] = field(default_factory=list)
    holding_cache_for: Callable[[str], Any] | None = None
    faults: Any = None  # the fault watchdog: its apology is the language's


class LanguageSwitcher(FrameProcessor):
    """Between the user aggregator and the LLM of an ``auto`` call (see the module docstring)."""

    def __init__(self, state: CallLanguageState, tap: TranscriptLanguageTap, **kwargs: Any):
        super().__init__(**kwargs)
        self.state = state
        self.tap = tap
        self.targets = SwitchTargets()
        self.switches: list[LanguageDecision] = []
        self._hinglish = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextUserTurnFrame) and direction == FrameDirection.DOWNSTREAM:
            language, probability = self.tap.take()
            decision = self.state.user_turn(frame.text, language, probability)
            if decision.switched or decision.hinglish != self._hinglish:
                await self._apply(decision)
        await self.push_frame(frame, direction)

    async def _apply(self, decision: LanguageDecision) -> None:
        """Everything the bot hears and says moves to ``decision.language``, before the LLM is
        asked for the reply to this turn."""
        self._hinglish = decision.hinglish
        t, language = self.targets, decision.language
        prompt = call_system_prompt(
            self.state.settings,
            language,
            auto=True,
            hinglish=decision.hinglish,
            base=self.state.base_prompt,
        )
        if hasattr(t.llm, "set_call_language"):
            t.llm.set_call_language(language)
        else:
            delta = LLMSettings(system_instruction=prompt)
            await self.push_frame(LLMUpdateSettingsFrame(delta=delta))
        if not decision.switched:
            return
        self.switches.append(decision)
        plan = switch_deltas(t.stt, t.tts, language, self.state.settings, auto=self.state.auto)
        for service in (t.stt, t.tts):
            if hasattr(service, "set_call_language"):
                service.set_call_language(language)
        if plan.stt is not None:
            await self.push_frame(STTUpdateSettingsFrame(delta=plan.stt), FrameDirection.UPSTREAM)
        if plan.tts is not None:
            await self.push_frame(TTSUpdateSettingsFrame(delta=plan.tts))
        if t.holding is not None and t.holding_cache_for is not None:
            t.holding.use_phrases(t.holding_cache_for(language), self.state.phrases.holding)
        for strategy in t.turn_strategies:
            if hasattr(strategy, "language"):
                strategy.language = language
        if t.faults is not None:
            t.faults.apology = self.state.phrases.apology


def holding_cache_for(shared: Any, language: str) -> Any:
    """The phrase cache holding ``language``'s phrases in its own voice (English: the default)."""
    return (getattr(shared, "phrase_caches", None) or {}).get(language) or shared.phrases


class CallLanguageWiring:
    """What ``bot.telephony.call.CallSession`` needs for the call's language, in three steps:
    ``language_for_call`` (state + provider-context fields), the processors around the user
    aggregator (``around_user``, only for ``auto``), and ``bind`` once the pipeline exists."""

    def __init__(self, state: CallLanguageState) -> None:
        self.state = state
        self.tap = TranscriptLanguageTap() if state.auto else None
        self.switcher = LanguageSwitcher(state, self.tap) if self.tap is not None else None

    @property
    def provider_fields(self) -> dict[str, Any]:
        """``language`` / ``auto`` / ``allowed`` for the call's ``ProviderContext``."""
        choice = self.state.choice
        return {"language": choice.language, "auto": choice.auto, "allowed": choice.allowed}

    @property
    def around_user(self) -> tuple[list[FrameProcessor], list[FrameProcessor]]:
        if self.switcher is None or self.tap is None:
            return [], []
        return [self.tap], [self.switcher]

    def bind(self, pipeline: Any, holding: Any, shared: Any, faults: Any = None) -> None:
        """Numbers before the TTS; an ``auto`` call's switch targets."""
        add_number_reading(pipeline.tts, self.state)
        if self.switcher is None:
            return
        strategies = pipeline.aggregators.user()._params.user_turn_strategies
        self.switcher.targets = SwitchTargets(
            stt=pipeline.stt,
            llm=pipeline.llm,
            tts=pipeline.tts,
            holding=holding,
            turn_strategies=list(getattr(strategies, "stop", None) or []),
            holding_cache_for=lambda language: holding_cache_for(shared, language),
            faults=faults,
        )


def language_for_call(
    info: Any, websocket: Any, settings: Settings, shared: Any
) -> CallLanguageWiring:
    """The call's language from its start: ``lang`` custom parameter, stream URL ``lang``
    query, the context answer's ``language`` (``info.context_language`` once the agent room
    sets it), else the configured default."""
    query = getattr(websocket, "query_params", None) or {}
    state = start_call_language(
        settings,
        getattr(shared, "language_policy", None),
        getattr(shared, "phrase_book", None),
        custom_parameters=getattr(info, "custom_parameters", None),
        query=dict(query),
        context_language=getattr(info, "context_language", None),
        call_id=getattr(info, "call_sid", ""),
    )
    return CallLanguageWiring(state)


async def prepare_languages(settings: Settings, choice: Any, shared: Any, rooms: Any) -> None:
    """At process start: the policy and phrases for every call, and each allowed language's
    phrases pre-rendered in its own voice (English keeps the default cache)."""
    from bot.conversation.holding import start_language_caches

    shared.language_policy, shared.phrase_book = rooms.languages, rooms.phrases
    if choice.stt.name == "whisper" and "hi-IN" in rooms.languages.languages:
        import asyncio

        from bot.providers.offline_hindi import get_hindi_models

        shared.hindi_models = await asyncio.to_thread(get_hindi_models)
    others = {
        language: rooms.phrases.for_language(language)
        for language in rooms.languages.languages
        if language != ENGLISH
    }
    if others:
        shared.phrase_caches = await start_language_caches(settings, choice, shared, others)

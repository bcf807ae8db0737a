"""Guards against two Pipecat 1.14 traps with tool calls in a phone call.

**An interrupted turn's end_call/transfer_call (pipecat issue 4997).** The LLM streams "Thank
you, goodbye" and an ``end_call``; Pipecat runs the handler as soon as the stream ends, while
the goodbye is still being spoken. If the caller then talks over it, the speech is binned but
the call ends anyway, on a caller mid-sentence. :class:`TurnGuard` watches the call's frames
(as a Pipecat observer) and lets a terminal handler wait until the turn that asked for it has
been heard out; it refuses when the caller started a turn after that response began. The
handler stays a synchronous (``cancel_on_interruption=True``) call while it waits, so
Pipecat's own interruption handling cancels it too: the guard is the backstop for a barge-in
that does not become a Pipecat interruption.

**A call cancelled before it started stays "in progress" (issues 3661, 5779).**
``FunctionCallsStartedFrame`` and ``FunctionCallCancelFrame`` are system frames; the
``FunctionCallInProgressFrame`` between them is not, and waits behind the bot's audio. A
cancel (barge-in, timeout) can thus reach the assistant aggregator first: Pipecat's handler
ignores it (nothing in progress yet), then the late in-progress frame writes ``IN_PROGRESS``
into the context and the call stays pending for good (the idle timer never arms again, the
model sees a tool that never answers). :class:`CancelSafeAssistantAggregator` settles such a
call as ``CANCELLED`` instead.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from loguru import logger
from pipecat.frames.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Frame,
    FunctionCallCancelFrame,
    FunctionCallInProgressFrame,
    InterruptionFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    UserStartedSpeakingFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.processors.aggregators.llm_response_universal import LLMAssistantAggregator

# Longest a terminal tool waits for its turn's speech to be heard; past it, with no barge-in
# seen, it goes ahead (the call's own ending waits for Exotel's mark echo anyway).
HEARD_MAX_WAIT_SECS = 20.0

_WATCHED = (
    UserStartedSpeakingFrame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
)


class TurnGuard(BaseObserver):
    """Whether the LLM turn that asked for a tool has been heard out, without a barge-in.

    Add it to the pipeline worker's observers; it reads only the few frames it needs (the
    call's observer hub asks :meth:`wants`). ``note`` takes a frame directly (tests).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._user_turns = 0
        self._response_turn: int | None = None  # user turns counted when the response began
        self._response_open = False
        self._response_spoke = False  # the response had words to say
        self._speaking = False
        self._heard_since_response = False  # the bot stopped speaking since it began
        self._changed = asyncio.Event()

    def wants(self, data: FramePushed) -> bool:
        return data.first_push and isinstance(data.frame, _WATCHED)

    async def on_push_frame(self, data: FramePushed) -> None:
        if self.wants(data):
            self.note(data.frame)

    def note(self, frame: Frame) -> None:
        """Update the state from one frame (each frame once: its first push)."""
        if isinstance(frame, UserStartedSpeakingFrame | InterruptionFrame):
            self._user_turns += 1
        elif isinstance(frame, LLMFullResponseStartFrame):
            self._response_turn = self._user_turns
            self._response_open, self._response_spoke = True, False
            self._heard_since_response = False
        elif isinstance(frame, LLMTextFrame):
            if self._response_open and frame.text.strip():
                self._response_spoke = True
        elif isinstance(frame, LLMFullResponseEndFrame):
            self._response_open = False
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._speaking = True
        elif isinstance(frame, BotStoppedSpeakingFrame):
            if self._speaking:
                self._heard_since_response = True
            self._speaking = False
        else:
            return
        self._changed.set()
        self._changed = asyncio.Event()

    @property
    def interrupted(self) -> bool:
        """The caller started a turn after the latest LLM response began."""
        return self._response_turn is not None and self._user_turns != self._response_turn

    @property
    def heard(self) -> bool:
        """The latest response is complete and what it said has been played out."""
        if self._response_open or self._speaking:
            return False
        return self._heard_since_response or not self._response_spoke

    async def until_heard(self, max_wait: float = HEARD_MAX_WAIT_SECS) -> bool:
        """True once the asking turn has been heard out; False as soon as the caller spoke.

        Cancellable (a barge-in that Pipecat turns into an interruption cancels the handler
        awaiting this). Past ``max_wait`` with no barge-in seen it answers True.
        """
        deadline = time.monotonic() + max_wait
        while True:
            if self.interrupted:
                return False
            if self.heard:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(f"the turn's speech was not reported heard in {max_wait:g} s")
                return True
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                continue


class CancelSafeAssistantAggregator(LLMAssistantAggregator):
    """Pipecat's assistant aggregator, except that a cancel overtaking its call's in-progress
    frame settles the call (``CANCELLED``) instead of leaving it ``IN_PROGRESS`` for good.

    It adds no constructor state, so it can replace the class of an existing aggregator
    (as bot.pipeline does for its own subclasses).
    """

    def _early_cancels(self) -> dict[str, bool]:
        return self.__dict__.setdefault("_agent_early_cancels", {})

    async def _handle_function_call_cancel(self, frame: FunctionCallCancelFrame) -> None:
        pending = self._function_calls_in_progress
        if frame.tool_call_id in pending and pending[frame.tool_call_id] is None:
            # Announced, not started yet: forget it now, settle its in-progress frame later.
            del pending[frame.tool_call_id]
            self._early_cancels()[frame.tool_call_id] = frame.run_llm
            logger.debug(f"{self}: {frame.function_name} cancelled before it started")
            return
        await super()._handle_function_call_cancel(frame)

    async def _handle_function_call_in_progress(self, frame: FunctionCallInProgressFrame) -> None:
        cancels = self._early_cancels()
        if frame.tool_call_id not in cancels:
            await super()._handle_function_call_in_progress(frame)
            return
        run_llm = cancels.pop(frame.tool_call_id)
        # The API wants every assistant tool call answered: add the call and its outcome.
        call = {"name": frame.function_name, "arguments": json.dumps(frame.arguments)}
        self._context.add_message(
            {
                "role": "assistant",
                "tool_calls": [{"id": frame.tool_call_id, "function": call, "type": "function"}],
            }
        )
        self._context.add_message(
            {"role": "tool", "content": "CANCELLED", "tool_call_id": frame.tool_call_id}
        )
        if run_llm and not self._user_speaking and not self._function_calls_in_progress:
            await self._maybe_push_context()

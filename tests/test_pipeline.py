"""Per-call pipeline plumbing that no whole-call test would notice going wrong."""

from __future__ import annotations

from pipecat.frames.frames import TextFrame
from pipecat.observers.base_observer import BaseObserver, FrameProcessed, FramePushed
from pipecat.pipeline.worker_observer import WorkerObserver
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from bot.pipeline import PushesOnlyUnlessAsked


class ReadsPushes(BaseObserver):
    async def on_push_frame(self, data: FramePushed) -> None:
        pass


class ReadsBoth(ReadsPushes):
    async def on_process_frame(self, data: FrameProcessed) -> None:
        pass


async def test_processed_frames_are_queued_only_for_observers_that_read_them():
    hub = WorkerObserver(observers=[ReadsPushes()])
    hub.__class__ = PushesOnlyUnlessAsked
    queued: list = []

    async def send_to_proxy(data) -> None:
        queued.append(data)

    hub._send_to_proxy = send_to_proxy
    data = FrameProcessed(
        processor=FrameProcessor(),
        frame=TextFrame("hi"),
        direction=FrameDirection.DOWNSTREAM,
        timestamp=0,
    )
    await hub.on_process_frame(data)
    assert queued == []  # the call's observer reads pushes only

    hub.add_observer(ReadsBoth())
    await hub.on_process_frame(data)
    assert queued == [data]

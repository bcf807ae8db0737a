"""LLM streaming benchmark: event-loop CPU per streamed chat completion, Pipecat's OpenAI
service against ours (bot/openai_stream.py), on the same fake server and conversation.

The fake OpenAI server runs on its own thread and event loop, so the CPU time measured on the
main thread (``time.thread_time``) is the client's alone: building the request, reading the
stream and turning each chunk into a ``ChatCompletionChunk``, as Pipecat's
``_process_context`` iterates it. The two services alternate rounds, so a slow moment of the
machine falls on both.

Usage: ``.venv/bin/python bench/llm_stream.py [--requests 15] [--rounds 3] [--history 6]``;
writes ``bench/results/llm_stream.json`` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipecat.processors.aggregators.llm_context import LLMContext  # noqa: E402
from pipecat.services.openai.llm import OpenAILLMService  # noqa: E402

from bot.providers import openai_service_class  # noqa: E402
from bot.testing import DEFAULT_OPENAI_KEY, FakeOpenAI  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "llm_stream.json"
REPLY = (
    "We are open from nine in the morning until six in the evening, Monday to Saturday, "
    "and on Sunday we are closed."
)


def serve_fake_in_thread() -> FakeOpenAI:
    """The fake on a loop of its own thread: its CPU is not the main thread's."""
    fake = FakeOpenAI(
        responder=lambda _messages, _tools: REPLY,
        first_token_latency=0.0,
        inter_token_delay=0.02,  # as the capacity bench's fakes: one chunk per read
    )
    started = threading.Event()

    def run() -> None:
        async def main() -> None:
            await fake.start()
            started.set()
            await asyncio.Event().wait()

        asyncio.run(main())

    threading.Thread(target=run, name="fake-openai", daemon=True).start()
    if not started.wait(10):
        raise RuntimeError("the fake OpenAI server did not start")
    return fake


def conversation(history: int) -> LLMContext:
    messages: list[Any] = [
        {"role": "user" if i % 2 == 0 else "assistant", "content": REPLY} for i in range(history)
    ]
    messages.append({"role": "user", "content": "When are you open?"})
    return LLMContext(messages)


async def one_request(service: OpenAILLMService, context: LLMContext) -> int:
    """One completion read the way Pipecat reads it; returns the chunks with text."""
    stream = await service.get_chat_completions(context)
    texts = 0
    iterator = stream.__aiter__()
    try:
        async for chunk in iterator:
            if chunk.choices and chunk.choices[0].delta.content:
                texts += 1
    finally:
        await iterator.aclose()
        await stream.close()
    return texts


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    fake = serve_fake_in_thread()
    settings = OpenAILLMService.Settings(model="gpt-4.1-mini", system_instruction="Be brief.")
    services = {
        "pipecat": OpenAILLMService(
            api_key=DEFAULT_OPENAI_KEY, base_url=fake.base_url, settings=settings
        ),
        "ours": openai_service_class()(
            api_key=DEFAULT_OPENAI_KEY, base_url=fake.base_url, settings=settings
        ),
    }
    context = conversation(args.history)
    chunks = {name: await one_request(s, context) for name, s in services.items()}  # warm up
    cpu_ms: dict[str, list[float]] = {name: [] for name in services}
    for _ in range(args.rounds):
        for name, service in services.items():
            start = time.thread_time()
            for _ in range(args.requests):
                await one_request(service, context)
            cpu_ms[name].append(1000 * (time.thread_time() - start) / args.requests)
    for service in services.values():
        await service._client.close()
    return {
        "requests_per_round": args.requests,
        "history_messages": args.history + 1,
        "text_chunks_per_reply": chunks,
        "cpu_ms_per_request": cpu_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=15, help="requests per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--history", type=int, default=6, help="earlier messages in context")
    args = parser.parse_args()
    result = asyncio.run(measure(args))
    print(
        f"event-loop CPU per streamed request ({result['history_messages']} messages, "
        f"{result['text_chunks_per_reply']['ours']} text chunks per reply)"
    )
    print(f"{'service':8}  {'median ms':>9}  rounds")
    medians = {}
    for name, values in result["cpu_ms_per_request"].items():
        medians[name] = statistics.median(values)
        print(f"{name:8}  {medians[name]:9.2f}  {', '.join(f'{v:.2f}' for v in values)}")
    print(f"ours / pipecat: {medians['ours'] / medians['pipecat']:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

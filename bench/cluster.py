"""Scale-out benchmark: one instance against N instances behind HAProxy, on this machine.

For each instance count (``--instances 1,2``) a local cluster is started with the same code as
``python -m bot cluster`` (``bot.cli.cluster.LocalCluster``: a real redis-server, the instances
as ``python -m bot serve`` with ``BOT_STATE_URL`` on it, a real haproxy from
``deploy/haproxy.cfg``), on the fake providers (one ``python -m bot.fakes`` process). One
instance is called directly (today's shape), more go through HAProxy. Each step is a round of
N concurrent calls (``--calls 1,50,100``), their starts spread over ``--ramp`` seconds, each the
greeting, ``--turns`` questions in real speech (Piper, so Silero fires) and the caller hanging
up, exactly as bench/capacity.py places them.

Per step it reports, from the callers' side: calls connected and completed, response latency
(caller end of speech -> first bot audio) p50/p95/p99 and the p99 against the same cluster's
single call, unanswered turns, underruns and chunk-rule violations; and how HAProxy spread the
calls (each instance's ``exotel_calls`` count from /metrics).

The goal (issue 22): 100 concurrent calls on 2 instances on a 2-core machine, 0 underruns and
p99 within 50 ms of a single call's.

Usage: ``.venv/bin/python bench/cluster.py [--instances 1,2] [--calls 1,50,100] [--turns 2]
[--ramp SECS] [--max-calls 0]``; writes ``bench/results/cluster.json``. Needs ``redis-server``
and ``haproxy`` on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    LOG_DIR,
    QUESTIONS,
    RATE,
    RESULTS_DIR,
    CallSummary,
    FakeLatencies,
    caller_speech,
    conversation,
    dist,
    fakes_env,
    fakes_process,
    free_port_base,
    ms,
    place_call,
    print_table,
    quiet_logs,
    run,
    write_json,
)

from bot.cli.cluster import ClusterError, ClusterSpec, LocalCluster  # noqa: E402

P99_BUDGET_SECS = 0.050  # the goal: p99 within 50 ms of a single call's


@dataclass
class Step:
    instances: int
    calls: int
    ramp_secs: float
    connected: int = 0
    completed: int = 0
    turns: int = 0
    unanswered: int = 0
    underruns: int = 0
    bad_chunk_messages: int = 0
    media_messages: int = 0
    other_violations: int = 0
    latency: dict[str, Any] = field(default_factory=dict)
    spread: list[int] = field(default_factory=list)  # calls each instance served
    error: str | None = None

    @property
    def p99(self) -> float | None:
        return self.latency.get("p99")


def add_calls(step: Step, calls: list[CallSummary]) -> None:
    latencies = [x for c in calls for x in c.say_latencies]
    step.connected = sum(c.connected for c in calls)
    step.completed = sum(c.connected and c.closed_by == "caller" for c in calls)
    step.turns = len(latencies) + sum(c.unanswered for c in calls)
    step.unanswered = sum(c.unanswered for c in calls)
    step.underruns = sum(c.underruns for c in calls)
    step.bad_chunk_messages = sum(c.bad_chunk_messages for c in calls)
    step.media_messages = sum(c.media_messages for c in calls)
    step.other_violations = sum(len(c.other_violations) for c in calls)
    step.latency = dist(latencies)


async def calls_served(cluster: LocalCluster) -> list[int]:
    """Each instance's ended-call count so far (``exotel_calls`` in its /metrics)."""
    counts = []
    async with httpx.AsyncClient(timeout=5) as client:
        for i in range(cluster.spec.instances):
            text = (await client.get(cluster.instance_url(i) + "/metrics")).text
            counts.append(
                round(
                    sum(
                        float(line.rsplit(" ", 1)[1])
                        for line in text.splitlines()
                        if line.startswith("exotel_calls_total{")
                    )
                )
            )
    return counts


async def run_cluster(
    instances: int, calls: list[int], env: dict[str, str], script: list, args: Any
) -> list[Step]:
    """One cluster of ``instances``; a warm-up call, then one round per N in ``calls``."""
    spec = ClusterSpec(
        instances=instances,
        base_port=free_port_base(instances + 3),
        workdir=LOG_DIR / f"cluster-{instances}",
        env=env,
    )
    steps = []
    async with LocalCluster(spec) as cluster:
        url = cluster.ws_url if instances > 1 else cluster.instance_url(0, "ws") + "/exotel/ws"
        url += f"?sample-rate={RATE}"
        await place_call(url, script, timeout=args.call_timeout)  # warm-up
        for n in calls:
            ramp = args.ramp if args.ramp is not None else min(10.0, n * 0.1)
            step = Step(instances, n, ramp)
            before = await calls_served(cluster)
            t = time.monotonic()
            results = await asyncio.gather(
                *(
                    place_call(url, script, delay=i * ramp / n, timeout=args.call_timeout)
                    for i in range(n)
                ),
                return_exceptions=True,
            )
            summaries = [r for r in results if isinstance(r, CallSummary)]
            if len(summaries) < n:
                step.error = f"{n - len(summaries)} calls raised: {results[0]!r}"[:200]
            add_calls(step, summaries)
            await asyncio.sleep(1.0)  # the last calls' ends reach /metrics
            step.spread = [b - a for a, b in zip(before, await calls_served(cluster), strict=True)]
            steps.append(step)
            print(
                f"  {instances} instance(s) N={n:<4} {time.monotonic() - t:4.0f} s  "
                f"p99 {ms(step.p99)} ms  underruns {step.underruns}  spread {step.spread}",
                file=sys.stderr,
                flush=True,
            )
    return steps


def print_steps(steps: list[Step]) -> None:
    rows = []
    for s in steps:
        single = next((x for x in steps if x.instances == s.instances and x.calls == 1), None)
        d99 = None if not single or s.p99 is None or single.p99 is None else s.p99 - single.p99
        met = (
            "-"
            if d99 is None
            else "yes"
            if d99 <= P99_BUDGET_SECS and s.underruns == 0 and s.completed == s.calls
            else "NO"
        )
        rows.append(
            [
                f"{s.instances} ({'direct' if s.instances == 1 else 'HAProxy'})", s.calls,
                f"{s.completed}/{s.calls}", ms(s.latency.get("p50")), ms(s.latency.get("p95")),
                ms(s.p99), "-" if d99 is None else f"{d99 * 1000:+.0f}",
                f"{s.unanswered}/{s.turns}", s.underruns,
                f"{s.bad_chunk_messages}/{s.media_messages}", s.other_violations,
                "/".join(map(str, s.spread)), met,
            ]
        )  # fmt: skip
    print_table(
        "scale-out (times in ms; latency = caller end of speech -> first bot audio; "
        "goal: 0 underruns, p99 within 50 ms of one call)",
        ["instances", "N", "completed", "p50", "p95", "p99", "dp99", "unansw", "underruns",
         "bad chunks", "viol", "spread", "goal"],
        rows,
    )  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    quiet_logs(args.log_level)
    started = time.monotonic()
    lat = FakeLatencies()
    clips = caller_speech(QUESTIONS[: args.turns])
    script = conversation([clips[q] for q in QUESTIONS[: args.turns]])
    base = free_port_base()
    steps: list[Step] = []
    async with fakes_process(lat, base, "cluster-fakes.log") as fakes:
        await fakes.wait_ports([base, base + 1, base + 2])
        env = {
            **fakes_env(base),
            "BOT_STT": "deepgram",
            "BOT_LLM": "openai",
            "BOT_TTS": "cartesia",
            "LOG_LEVEL": os.environ.get("BENCH_BOT_LOG_LEVEL", "WARNING"),
            "BOT_MAX_CALLS": str(args.max_calls),
            "SHUTDOWN_DRAIN_SECS": "0",
        }
        for instances in args.instances:
            try:
                steps += await run_cluster(instances, args.calls, env, script, args)
            except ClusterError as e:
                steps.append(Step(instances, 0, 0.0, error=str(e)[:300]))
                print(f"  {instances} instance(s): {e}", file=sys.stderr)
            write_json(Path(args.out), {"args": vars(args), "steps": [asdict(s) for s in steps]})
    print_steps(steps)
    print(f"\nwrote {args.out} ({time.monotonic() - started:.0f} s)")


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=_ints, default=[1, 2], help="e.g. 1,2")
    parser.add_argument("--calls", type=_ints, default=[1, 50, 100], help="concurrent calls")
    parser.add_argument("--turns", type=int, default=2, help="caller questions per call")
    parser.add_argument("--ramp", type=float, default=None, help="spread starts over (s)")
    parser.add_argument(
        "--max-calls", type=int, default=0, help="BOT_MAX_CALLS per instance (0: no limit)"
    )
    parser.add_argument("--call-timeout", type=float, default=120.0)
    parser.add_argument("--log-level", default="ERROR", help="the simulators' log level")
    parser.add_argument("--out", default=str(RESULTS_DIR / "cluster.json"))
    args = parser.parse_args(argv)
    if args.turns < 1 or args.turns > len(QUESTIONS):
        parser.error(f"--turns: 1 to {len(QUESTIONS)}")
    if 1 not in args.calls:
        args.calls = [1, *args.calls]  # the single call every step is measured against
    return args


if __name__ == "__main__":
    run(lambda: main(parse_args()))

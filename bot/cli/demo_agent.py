"""``python -m bot demo --scenario agent``: the per-call agent offline, end to end.

Like ``demo``, it starts the real server (``python -m bot serve``) on a loopback port with the
offline providers, but with an agent config (a TOML file written to the output folder):
``end_call`` and ``transfer_call`` enabled, a ``default`` department, and a ``lookup_order``
HTTP tool pointing at a small aiohttp server that this command runs on loopback. The caller
asks where an order is (the scripted responder's ``order_lookup`` intent takes the number
from the words and calls the tool; its answer is spoken) and then asks for a person (the
``transfer_to_person`` intent calls ``transfer_call``: the transfer message, its mark echo,
the stream closed). Then it asks ``/exotel/passthru`` about that CallSid as Exotel's
Passthru applet would (302: transferred) and ``/exotel/connect`` for the numbers to dial.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from aiohttp import web

from bot.cli.demo import (
    _find_record,
    _free_port,
    _open_log,
    _print_and_save,
    _stop,
    _wait_healthy,
    speech,
)
from bot.simulator import (
    Action,
    CallConfig,
    CallRecording,
    ExotelSimulator,
    Say,
    WaitForBot,
    WaitForBotHangup,
)

ORDER_QUESTION = "Where is my order? The number is 4 5 6 7."
PERSON_QUESTION = "Thank you. Can I talk to a person, please?"
DEPARTMENT_NUMBERS = ["+918000000001"]
TRANSFER_MESSAGE = "Please hold while I connect you to a colleague."

CONFIG = """\
# Written by `python -m bot demo --scenario agent`.
[agent]
builtin_tools = ["end_call", "transfer_call"]
transfer_message = "{message}"

[agent.departments]
default = {numbers}

[[tools]]
name = "lookup_order"
description = "Look up an order's delivery status by its number"
url = "{base}/orders/{{{{order_id}}}}"
method = "GET"
timeout_secs = 3

[tools.parameters]
type = "object"
properties = {{ order_id = {{ type = "string", description = "the order number" }} }}
required = ["order_id"]
"""


@dataclass
class OrderDesk:
    """The business's order API, on loopback: what it was asked, and with which CallSid."""

    base: str = ""
    asked: list[dict[str, str]] = field(default_factory=list)
    _runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/orders/{order_id}", self._order)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base = f"http://127.0.0.1:{port}"

    async def _order(self, request: web.Request) -> web.Response:
        order_id = request.match_info["order_id"]
        self.asked.append({"order_id": order_id, "call_sid": request.headers.get("X-Call-Sid")})
        return web.json_response(
            {
                "order_id": order_id,
                "status": "out for delivery",
                "detail": "It reaches you by six this evening.",
            }
        )

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def agent_script(rate: int) -> list[Action]:
    """Greeting; the order question (a tool call); a person, please (the transfer)."""
    order, person = speech([ORDER_QUESTION, PERSON_QUESTION], rate)
    return [
        WaitForBot(gap=0.4),
        Say(order, gap=0.6, label="order (tool)", text=ORDER_QUESTION),
        Say(person, gap=0.6, label="person (transfer)", text=PERSON_QUESTION),
        WaitForBotHangup(timeout=20),
    ]


def write_config(out: Path, desk: OrderDesk) -> Path:
    path = out / "agent-demo.toml"
    text = CONFIG.format(
        message=TRANSFER_MESSAGE, numbers=json.dumps(DEPARTMENT_NUMBERS), base=desk.base
    )
    path.write_text(text, encoding="utf-8")
    return path


async def ask_exotel(base: str, call_sid: str) -> tuple[int, dict[str, Any]]:
    """Passthru (sync) for the call, as Exotel asks after the Voicebot applet; then Connect."""
    params = {"CallSid": call_sid, "Stream[Status]": "completed"}
    async with httpx.AsyncClient(base_url=base, timeout=5) as client:
        passthru = await client.get("/exotel/passthru", params=params)
        connect = await client.get("/exotel/connect", params={"CallSid": call_sid})
    return passthru.status_code, connect.json()


async def run_agent_demo(out: Path, rate: int) -> int:
    port, log_path = _free_port(), out / "server.log"
    base = f"http://127.0.0.1:{port}"
    desk = OrderDesk()
    await desk.start()
    config = write_config(out, desk)
    env = {
        **os.environ,
        "CALL_RECORDS_DIR": str(out / "records"),
        "BOT_DATA_DIR": str(out / "data"),
        "LOG_LEVEL": "INFO",
    }
    print(f"Starting the bot with {config}: python -m bot serve --port {port}  (log: {log_path})")
    print(f"The order desk (the lookup_order tool) listens on {desk.base}")
    try:
        with _open_log(log_path) as log:
            server = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port),
                "--config", str(config), env=env, stdout=log, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            try:
                script = await asyncio.to_thread(agent_script, rate)
                await _wait_healthy(base, server, log_path)
                url = f"ws://127.0.0.1:{port}/exotel/ws?sample-rate={rate}"
                print(f"Calling {url} as Exotel would ...\n")
                rec = await ExotelSimulator(CallConfig(url=url, wait_timeout=30)).run(script)
                passthru, connect = await ask_exotel(base, rec.call_sid)
                await asyncio.sleep(1.0)  # the server writes the call record as the call ends
            finally:
                await _stop(server)
    finally:
        await desk.stop()
    record = _find_record(out / "records", rec.call_sid)
    _print_and_save(rec, out, record)
    ok = print_agent_summary(rec, record, desk, passthru, connect)
    return 0 if ok and not rec.violations and rec.connect_error is None else 1


def print_agent_summary(
    rec: CallRecording,
    record: dict | None,
    desk: OrderDesk,
    passthru: int,
    connect: dict[str, Any],
) -> bool:
    """The agent's part of the call; True when the tool ran and the call was transferred."""
    agent = (record or {}).get("agent") or {}
    print("\nAgent")
    for call in agent.get("tool_calls") or []:
        print(
            f"  tool call: {call['name']} {call['arguments']} -> {call['status']}, "
            f"{call['result_bytes']} bytes in {call['duration_secs'] * 1000:.0f} ms"
        )
    for asked in desk.asked:
        print(f"  order desk asked for order {asked['order_id']} (X-Call-Sid {asked['call_sid']})")
    print(f"  captures: {(record or {}).get('captures')}")
    echoed = rec.marks[-1].echoed_at if rec.marks else None
    echo = f"{echoed:.2f} s" if echoed is not None else "none"
    print(f"  outcome: {agent.get('outcome')}; transfer: {agent.get('transfer')}")
    print(f"  last mark echoed at {echo}; stream closed by {rec.closed_by}")
    print(f"  Passthru for {rec.call_sid}: {passthru}  (302: Exotel takes the Connect branch)")
    print(f"  /exotel/connect: {json.dumps(connect)}")
    called = any(c.get("name") == "lookup_order" for c in agent.get("tool_calls") or [])
    return called and passthru == 302 and rec.closed_by == "bot"


def agent_demo_main(out: str, rate: int) -> int:
    Path(out).mkdir(parents=True, exist_ok=True)
    return asyncio.run(run_agent_demo(Path(out), rate))

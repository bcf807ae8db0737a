"""The calls page in a real headless browser (Debian's chromium) at 360 x 800, and its access.

The browser is driven over the DevTools protocol (``--remote-debugging-port``), so the test
reads what a phone would show: the rendered text, the viewport meta tag, and whether the
document is wider than the window (a horizontal scroll).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from bot.state import MemoryStore
from bot.testing.fakes import FakeProviders
from tests.delivery.test_from_record import record
from tests.delivery.wiring import wired_bot

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = (
    "JSON.stringify({scroll: document.documentElement.scrollWidth, width: window.innerWidth,"
    " text: document.body.innerText,"
    " viewport: !!document.querySelector('meta[name=viewport]')})"
)


class Browser:
    """One headless chromium and a DevTools connection to its page."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.process: asyncio.subprocess.Process | None = None
        self.page: Any = None
        self._id = 0

    async def __aenter__(self) -> Browser:
        self.process = await asyncio.create_subprocess_exec(
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={self.profile}",
            "--window-size=360,800",
            "--remote-debugging-port=0",
            "about:blank",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        port = await self._devtools_port()
        async with httpx.AsyncClient(timeout=5) as client:
            targets = (await client.get(f"http://127.0.0.1:{port}/json/list")).json()
        url = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
        self.page = await websockets.connect(url, max_size=2**24)
        await self.send("Page.enable")
        # A phone: 360 x 800 CSS pixels, mobile layout (without a viewport meta tag a mobile
        # browser lays the page out 980 px wide, and this probe would see the scroll).
        await self.send(
            "Emulation.setDeviceMetricsOverride",
            width=360,
            height=800,
            deviceScaleFactor=2,
            mobile=True,
        )
        return self

    async def _devtools_port(self) -> int:
        assert self.process is not None and self.process.stderr is not None
        async with asyncio.timeout(15):
            while True:
                line = (await self.process.stderr.readline()).decode()
                if not line:
                    raise AssertionError("chromium exited before DevTools listened")
                found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line)
                if found:
                    return int(found.group(1))

    async def __aexit__(self, *exc: object) -> None:
        if self.page is not None:
            await self.page.close()
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        """A command; returns its result (events in between are skipped)."""
        self._id += 1
        await self.page.send(json.dumps({"id": self._id, "method": method, "params": params}))
        async with asyncio.timeout(15):
            while True:
                message = json.loads(await self.page.recv())
                if message.get("id") == self._id:
                    return message.get("result", {})

    async def open(self, url: str) -> dict[str, Any]:
        """Navigate, wait for the load event, and run the probe."""
        self._id += 1
        navigate_id = self._id
        await self.page.send(
            json.dumps({"id": navigate_id, "method": "Page.navigate", "params": {"url": url}})
        )
        async with asyncio.timeout(15):
            while json.loads(await self.page.recv()).get("method") != "Page.loadEventFired":
                pass
        result = await self.send("Runtime.evaluate", expression=PROBE, returnByValue=True)
        return json.loads(result["result"]["value"])


async def kept_call(bot: Any) -> str:
    """A finished call, kept by the server's own after-call path."""
    rec = record(call_sid="CA-page-1", **{"from": "+919800000001"})
    rec["turns"][0]["heard"] = "what are your opening hours on a long public holiday weekend"
    event = await bot.runtime.post_call.call_ended(rec)
    assert event is not None
    return event.call_sid


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt install chromium)")
async def test_the_page_in_a_phone_sized_headless_browser(tmp_path: Path) -> None:
    # Bound to loopback: served without ADMIN_BASIC_AUTH (local development).
    async with (
        FakeProviders() as fakes,
        wired_bot(fakes, MemoryStore(), admin_basic_auth=None, host="127.0.0.1") as bot,
    ):
        sid = await kept_call(bot)
        async with Browser(tmp_path / "profile") as browser:
            listing = await browser.open(f"{bot.base}/calls")
            detail = await browser.open(f"{bot.base}/calls/{sid}")
            transferred = await browser.open(f"{bot.base}/calls?outcome=transferred")
    for page in (listing, detail, transferred):
        assert page["viewport"]
        assert page["width"] == 360 and page["scroll"] <= page["width"], page
    assert "+919800000001" in listing["text"] and "caller hung up" in listing["text"]
    assert "what are your opening hours" in detail["text"]
    assert "Nine to five." in detail["text"] and "caller hung up" in detail["text"]
    assert "Latency per turn" in detail["text"] and "500 ms" in detail["text"]
    assert "+919800000001" not in transferred["text"]


async def test_without_admin_auth_the_page_is_refused_off_loopback() -> None:
    async with (
        FakeProviders() as fakes,
        wired_bot(fakes, MemoryStore(), admin_basic_auth=None, host="127.0.0.1") as bot,
    ):
        async with httpx.AsyncClient(base_url=bot.base, timeout=5) as client:
            assert (await client.get("/api/calls")).status_code == 200  # loopback (tests)
            bot.runtime.settings.host = "0.0.0.0"
            refused = await client.get("/calls")
    assert refused.status_code == 403 and "ADMIN_BASIC_AUTH" in refused.text

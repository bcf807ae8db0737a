"""``python -m bot cluster``: its HAProxy config, its errors, and the command end to end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx
import pytest

from bot.cli.cluster import (
    HAPROXY_TEMPLATE,
    ClusterError,
    ClusterSpec,
    LocalCluster,
    render_haproxy,
)
from tests.cluster.conftest import ROOT, free_run

pytestmark = pytest.mark.cluster


def test_the_template_is_rendered_for_the_clusters_ports():
    cfg = render_haproxy(
        HAPROXY_TEMPLATE.read_text(),
        host="127.0.0.1",
        listen_port=9000,
        stats_port=9004,
        instance_ports=[9001, 9002, 9003],
    )
    lines = [line.strip() for line in cfg.splitlines()]
    assert [x for x in lines if x.startswith("bind ")] == [
        "bind 127.0.0.1:9000",
        "bind 127.0.0.1:9004",
    ]
    assert [x for x in lines if x.startswith("server ")] == [
        "server bot1 127.0.0.1:9001",
        "server bot2 127.0.0.1:9002",
        "server bot3 127.0.0.1:9003",
    ]
    # What the balancer relies on is used as written.
    for needed in ("balance leastconn", "option httpchk GET /ready", "http-check expect status 200",
                   "retry-on 503 conn-failure empty-response", "option redispatch 1",
                   "timeout tunnel 65m", "retries 2"):  # fmt: skip
        assert needed in lines, needed


def test_the_shipped_config_is_valid_haproxy(binaries, tmp_path):
    result = subprocess.run(
        ["haproxy", "-c", "-f", str(HAPROXY_TEMPLATE)], capture_output=True, text=True, timeout=10
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_missing_binary_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ClusterError, match="redis-server is not on PATH; Debian/Ubuntu: sudo apt"):
        LocalCluster(ClusterSpec(workdir=tmp_path))
    env = {**os.environ, "PATH": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "cluster", "--instances", "1"],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 2 and "brew install redis" in result.stderr


async def test_the_command_serves_through_haproxy_and_stops_on_ctrl_c(binaries, fakes, tmp_path):
    base = free_run(4)
    env = {
        **os.environ,
        **fakes.env(),
        "BOT_STT": "deepgram",
        "BOT_LLM": "openai",
        "BOT_TTS": "cartesia",
        "HOLDING_MODE": "off",
        "PYTHONPATH": str(ROOT),
        "HOLDING_CACHE_DIR": str(tmp_path / "phrases"),
    }
    argv = [sys.executable, "-m", "bot", "cluster", "--instances", "1", "--base-port", str(base),
            "--workdir", str(tmp_path / "c")]  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    lines: list[str] = []
    try:
        async with asyncio.timeout(90):
            while not lines or "Ctrl-C stops everything" not in lines[-1]:
                line = (await proc.stdout.readline()).decode()
                assert line, "".join(lines)
                lines.append(line)
        async with httpx.AsyncClient(timeout=5) as client:
            ready = await client.get(f"http://127.0.0.1:{base}/ready")
        proc.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    printed = "".join(lines)
    print(printed)
    assert ready.json() == {"status": "ready", "active_calls": 0}
    assert f"ws://127.0.0.1:{base}/exotel/ws" in printed and "redis://127.0.0.1:" in printed

"""``python -m bot cluster``: Redis, N bot instances and HAProxy on this machine, in the foreground.

The same shape as production (docs/scaling.md), on loopback: a real ``redis-server`` for the
shared state, one ``python -m bot serve`` per instance on its own port with ``BOT_STATE_URL``
pointing at it, and a real ``haproxy`` in front with ``deploy/haproxy.cfg`` rendered for these
ports. Nothing here balances, queues or retries by itself: HAProxy and Redis do their jobs.

:class:`LocalCluster` is also what the cluster tests and ``bench/cluster.py`` drive (restart an
instance, kill one, restart Redis); :func:`cluster_main` is the command.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ctypes
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
from loguru import logger

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPROXY_TEMPLATE = REPO_ROOT / "deploy" / "haproxy.cfg"
LOCALHOST = "127.0.0.1"
BACKEND = "bots"  # the backend section of deploy/haproxy.cfg
INSTANCE_MARKER = "# instances"  # the template lines the cluster replaces with its own

INSTALL_HINTS = {
    "redis-server": "Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis",
    "haproxy": "Debian/Ubuntu: sudo apt-get install haproxy; macOS: brew install haproxy",
}
START_TIMEOUT_SECS = 90.0  # an instance loads its models before /ready answers
STOP_TIMEOUT_SECS = 15.0
HTTP_TIMEOUT_SECS = 2.0


class ClusterError(RuntimeError):
    """Something the person running the cluster can fix (a missing binary, a busy port)."""


def require_binary(name: str) -> str:
    """The path of ``name`` on PATH, or a ClusterError saying how to install it."""
    path = shutil.which(name)
    if path is None:
        hint = INSTALL_HINTS.get(name, "install it")
        raise ClusterError(f"{name} is not on PATH; {hint}")
    return path


def render_haproxy(
    template: str, *, host: str, listen_port: int, stats_port: int, instance_ports: Sequence[int]
) -> str:
    """``deploy/haproxy.cfg`` with this cluster's ports in the lines marked ``# instances``.

    The first ``bind`` so marked is the calls' frontend, the second the stats page; the marked
    ``server`` lines become one ``server botN host:port`` per instance.
    """
    binds = iter((listen_port, stats_port))
    out: list[str] = []
    servers_done = False
    for line in template.splitlines():
        if INSTANCE_MARKER not in line or line.lstrip().startswith("#"):
            out.append(line)
            continue
        indent = line[: len(line) - len(line.lstrip())]
        word = line.split()[0]
        if word == "bind":
            port = next(binds, None)
            if port is None:
                raise ClusterError("the HAProxy template marks more than two bind lines")
            out.append(f"{indent}bind {host}:{port}")
        elif word == "server" and not servers_done:
            servers_done = True
            out += [f"{indent}server {name} {host}:{p}" for name, p in _named(instance_ports)]
        elif word != "server":
            raise ClusterError(f"the HAProxy template marks an unexpected line: {line.strip()}")
    if not servers_done or next(binds, None) is not None:
        raise ClusterError("the HAProxy template needs two marked bind lines and server lines")
    return "\n".join(out) + "\n"


def _named(ports: Sequence[int]) -> list[tuple[str, int]]:
    return [(f"bot{i + 1}", port) for i, port in enumerate(ports)]


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if the cluster process dies, even by SIGKILL."""
    with suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)


class Child:
    """One process of the cluster, its output in a log file, in its own session (so Ctrl-C
    reaches only the cluster command, which stops the children in order)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log_path = log_path
        self.proc: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self) -> None:
        self._log = _open_log(self.log_path)
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def send(self, sig: int) -> None:
        if self.running:
            with suppress(ProcessLookupError):
                self.proc.send_signal(sig)  # type: ignore[union-attr]

    async def wait(self, timeout: float = STOP_TIMEOUT_SECS) -> int | None:
        """Until it exits (SIGKILL after ``timeout``); its exit code."""
        if self.proc is not None:
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except TimeoutError:
                logger.warning(f"{self.name} did not stop in {timeout:.0f} s; killing it")
                self.send(signal.SIGKILL)
                await self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc else None

    async def stop(
        self, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_SECS
    ) -> int | None:
        self.send(sig)
        return await self.wait(timeout)

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.returncode is not None:
            tail = self.log_path.read_text(errors="replace")[-1500:]
            raise ClusterError(f"{self.name} exited with {self.proc.returncode}:\n{tail}")


def _open_log(path: Path) -> IO[bytes]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return open(path, "ab")  # noqa: SIM115 - closed by Child.wait


def default_instance_argv(host: str, port: int, config: str | None) -> list[str]:
    argv = [sys.executable, "-m", "bot", "serve", "--host", host, "--port", str(port)]
    return [*argv, "--config", config] if config else argv


@dataclass
class ClusterSpec:
    """What to start. Ports: HAProxy on ``base_port``, instance i on ``base_port + i``, the
    stats page on ``base_port + instances + 1``, Redis on ``base_port + instances + 2``."""

    instances: int = 2
    base_port: int = 8080
    host: str = LOCALHOST
    config: str | None = None
    workdir: Path | None = None
    env: dict[str, str] = field(default_factory=dict)  # added to every instance's environment
    # (host, port) -> argv of one instance; tests swap in their own launcher.
    instance_argv: Callable[[str, int], list[str]] | None = None
    haproxy_template: Path = HAPROXY_TEMPLATE

    @property
    def lb_port(self) -> int:
        return self.base_port

    @property
    def stats_port(self) -> int:
        return self.base_port + self.instances + 1

    @property
    def redis_port(self) -> int:
        return self.base_port + self.instances + 2

    def instance_port(self, index: int) -> int:
        return self.base_port + 1 + index

    def all_ports(self) -> list[int]:
        return [self.lb_port, *map(self.instance_port, range(self.instances)), self.stats_port,
                self.redis_port]  # fmt: skip


class LocalCluster:
    """Redis, the instances and HAProxy as child processes; ``async with`` starts and stops
    them all. Instances are named bot1..botN, as in HAProxy's backend."""

    def __init__(self, spec: ClusterSpec) -> None:
        if spec.instances < 1:
            raise ClusterError("--instances must be at least 1")
        self.spec = spec
        self.redis_binary = require_binary("redis-server")
        self.haproxy_binary = require_binary("haproxy")
        if not spec.haproxy_template.is_file():
            raise ClusterError(
                f"HAProxy template {spec.haproxy_template} not found (--haproxy-cfg)"
            )
        self.workdir = spec.workdir or Path(tempfile.mkdtemp(prefix="bot-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.redis: Child | None = None
        self.haproxy: Child | None = None
        self.instances: list[Child | None] = [None] * spec.instances

    # -- addresses -------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return f"redis://{self.spec.host}:{self.spec.redis_port}/0"

    @property
    def http_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.lb_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.spec.host}:{self.spec.lb_port}/exotel/ws"

    @property
    def stats_url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.stats_port}/stats"

    def instance_url(self, index: int, scheme: str = "http") -> str:
        return f"{scheme}://{self.spec.host}:{self.spec.instance_port(index)}"

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> LocalCluster:
        try:
            await self.start()
        except BaseException:
            await self.stop(signal.SIGINT)
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop(signal.SIGINT)

    async def start(self) -> None:
        busy = [p for p in self.spec.all_ports() if not port_is_free(self.spec.host, p)]
        if busy:
            raise ClusterError(f"ports in use: {busy}; choose another --base-port")
        await self.start_redis()
        await asyncio.gather(*(self.start_instance(i) for i in range(self.spec.instances)))
        await self.start_haproxy()

    async def stop(self, sig: int = signal.SIGTERM) -> None:
        """Instances first (SIGTERM drains their calls, SIGINT ends them), then HAProxy, Redis."""
        timeout = _stop_timeout(sig, self.spec.env)
        await asyncio.gather(*(c.stop(sig, timeout) for c in self.instances if c))
        for child in (self.haproxy, self.redis):
            if child is not None:
                await child.stop(signal.SIGTERM)

    async def start_redis(self) -> None:
        argv = [self.redis_binary, "--port", str(self.spec.redis_port), "--bind", self.spec.host,
                "--dir", str(self.workdir), "--save", "", "--appendonly", "no"]  # fmt: skip
        self.redis = Child("redis", argv, dict(os.environ), self.workdir / "redis.log")
        await self.redis.start()
        await _until(lambda: self._redis_answers(), self.redis, 10.0, "redis-server PING")

    async def stop_redis(self) -> None:
        if self.redis is not None:
            await self.redis.stop(signal.SIGTERM)

    async def _redis_answers(self) -> bool:
        try:
            reader, writer = await asyncio.open_connection(self.spec.host, self.spec.redis_port)
        except OSError:
            return False
        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            return (await asyncio.wait_for(reader.readline(), 1.0)).startswith(b"+PONG")
        except (OSError, TimeoutError):
            return False
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()

    def instance_env(self, index: int) -> dict[str, str]:
        env = dict(os.environ)
        env.pop("PORT", None)  # the instance's port is on its command line
        env.update(
            BOT_STATE_URL=self.redis_url,
            BOT_DATA_DIR=str(self.workdir / f"bot{index + 1}-data"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.spec.env)
        return env

    async def start_instance(self, index: int) -> None:
        """Start instance ``index`` (again) and wait until its /ready answers 200."""
        host, port = self.spec.host, self.spec.instance_port(index)
        make = self.spec.instance_argv
        argv = make(host, port) if make else default_instance_argv(host, port, self.spec.config)
        name = f"bot{index + 1}"
        child = Child(name, argv, self.instance_env(index), self.workdir / f"{name}.log")
        self.instances[index] = child
        await child.start()
        url = f"{self.instance_url(index)}/ready"
        await _until(lambda: _http_ok(url), child, START_TIMEOUT_SECS, f"{name} /ready")

    async def stop_instance(
        self, index: int, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT_SECS
    ) -> int | None:
        """Signal instance ``index`` (SIGTERM drains it, SIGKILL is a crash) and wait for it."""
        child = self.instances[index]
        return await child.stop(sig, timeout) if child else None

    async def start_haproxy(self) -> None:
        cfg = self.workdir / "haproxy.cfg"
        cfg.write_text(
            render_haproxy(
                self.spec.haproxy_template.read_text(),
                host=self.spec.host,
                listen_port=self.spec.lb_port,
                stats_port=self.spec.stats_port,
                instance_ports=[self.spec.instance_port(i) for i in range(self.spec.instances)],
            )
        )
        argv = [self.haproxy_binary, "-db", "-f", str(cfg)]
        self.haproxy = Child("haproxy", argv, dict(os.environ), self.workdir / "haproxy.log")
        await self.haproxy.start()
        for i in range(self.spec.instances):
            await self.wait_backend(i, "UP")

    # -- HAProxy's view ---------------------------------------------------------------------

    async def backend_stats(self) -> dict[str, dict[str, str]]:
        """HAProxy's CSV row for each instance (``status``, ``wretr`` retries, ``wredis``
        redispatches, ``hrsp_5xx``...), by name."""
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECS) as client:
            text = (await client.get(f"{self.stats_url};csv")).text
        rows = csv.DictReader(io.StringIO(text.removeprefix("# ")))
        return {r["svname"]: r for r in rows if r["pxname"] == BACKEND
                and r["svname"] not in ("FRONTEND", "BACKEND")}  # fmt: skip

    async def backend_status(self) -> dict[str, str]:
        """Each instance's state in HAProxy (``UP``, ``DOWN``, ``UP 1/2``...)."""
        return {name: row["status"] for name, row in (await self.backend_stats()).items()}

    async def wait_backend(self, index: int, status: str, timeout: float = 20.0) -> None:
        """Until HAProxy reports instance ``index`` in ``status`` (its health checks agree)."""
        name = f"bot{index + 1}"

        async def reached() -> bool:
            try:
                return (await self.backend_status()).get(name) == status
            except httpx.HTTPError:
                return False

        await _until(reached, self.haproxy, timeout, f"HAProxy to see {name} {status}")


def _stop_timeout(sig: int, env: dict[str, str]) -> float:
    """A draining instance may take its SHUTDOWN_DRAIN_SECS; an interrupted one may not."""
    if sig != signal.SIGTERM:
        return STOP_TIMEOUT_SECS
    drain = float(env.get("SHUTDOWN_DRAIN_SECS") or os.environ.get("SHUTDOWN_DRAIN_SECS") or 30)
    return drain + STOP_TIMEOUT_SECS + 15.0  # the goodbye's wait


async def _http_ok(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT_SECS) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def _until(
    check: Callable[[], object], child: Child | None, timeout: float, what: str
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[misc]
        if child is not None:
            child.check_alive()
        if time.monotonic() > deadline:
            where = f"; see {child.log_path}" if child else ""
            raise ClusterError(f"timed out after {timeout:.0f} s waiting for {what}{where}")
        await asyncio.sleep(0.1)


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------


def add_cluster_parser(sub: argparse._SubParsersAction) -> None:
    cluster = sub.add_parser(
        "cluster", help="run Redis, N instances and HAProxy on this machine (foreground)"
    )
    cluster.add_argument("--instances", type=int, default=2, help="bot instances (default 2)")
    cluster.add_argument(
        "--base-port",
        type=int,
        default=8080,
        help="HAProxy's port; instances on the next N ports, then stats, then Redis",
    )
    cluster.add_argument("--config", help="TOML config file for every instance")
    cluster.add_argument("--workdir", type=Path, help="logs and Redis files (default: a temp dir)")
    cluster.add_argument("--haproxy-cfg", type=Path, default=HAPROXY_TEMPLATE, help="template")
    cluster.set_defaults(run=cluster_main)


def cluster_main(args: argparse.Namespace) -> int:
    spec = ClusterSpec(
        instances=args.instances,
        base_port=args.base_port,
        config=args.config,
        workdir=args.workdir,
        haproxy_template=args.haproxy_cfg,
    )
    try:
        return asyncio.run(_run_cluster(spec))
    except ClusterError as e:
        print(f"cluster: {e}", file=sys.stderr)
        return 2


async def _run_cluster(spec: ClusterSpec) -> int:
    cluster = LocalCluster(spec)
    stop = asyncio.Event()
    received: list[int] = []
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda s=sig: (received.append(s), stop.set()))
    print(f"starting Redis, {spec.instances} instances and HAProxy; logs in {cluster.workdir}")
    try:
        await cluster.start()
    except BaseException:
        await cluster.stop(signal.SIGINT)
        raise
    print(f"  Exotel stream URL  {cluster.ws_url}  (dynamic URL: {cluster.http_url}/exotel/url)")
    for i in range(spec.instances):
        print(f"  instance bot{i + 1}      {cluster.instance_url(i)}  (/ready, /metrics)")
    print(f"  HAProxy stats      {cluster.stats_url}")
    print(f"  Redis              {cluster.redis_url}")
    print("Ctrl-C stops everything at once; SIGTERM drains the instances' calls first.")
    watcher = asyncio.create_task(_report_exits(cluster))
    await stop.wait()
    watcher.cancel()
    sig = received[0] if received else signal.SIGINT
    print("draining the instances..." if sig == signal.SIGTERM else "stopping...")
    await cluster.stop(sig)
    return 0


async def _report_exits(cluster: LocalCluster) -> None:
    """Say so when a child dies on its own (the others go on, as in production)."""
    seen: set[str] = set()
    while True:
        await asyncio.sleep(1.0)
        for child in [cluster.redis, cluster.haproxy, *cluster.instances]:
            if (
                child
                and child.proc
                and child.proc.returncode is not None
                and child.name not in seen
            ):
                seen.add(child.name)
                print(f"{child.name} exited with {child.proc.returncode}; see {child.log_path}")

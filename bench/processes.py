"""The service as child processes, as a deployment runs it: ``irtrack serve`` on the embedded
queue, or ``redis-server`` on a free port + ``irtrack worker`` processes + ``irtrack serve``.

Shared by the benchmarks that measure a running service from outside (``bench service``,
``soak``, ``chaos``, ``memory``) and by the tests that run it so (``tests/scale_out_support.py``):
each process logs to a file, is stopped gently (SIGTERM) and then firmly, and can be killed
(SIGKILL) or restarted on the same port to inject a fault.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from data.paths import REPO_ROOT

BACKENDS = ("embedded", "redis")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime


class ChildProcess:
    """A child process logging to ``log_path`` (appended to across restarts); ``port``: where it
    listens, if it does."""

    def __init__(
        self,
        role: str,
        command: list[str],
        env: dict[str, str],
        log_path: Path,
        port: int | None = None,
    ) -> None:
        self.role = role
        self.command = command
        self.port = port
        self.env = env
        self.log_path = log_path
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                self.command, cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def check_running(self) -> None:
        if not self.running:
            raise RuntimeError(
                f"{self.role} exited with {self.process.returncode}; its log:\n{self.log_tail()}"
            )

    def wait_ready(self, timeout_s: float) -> None:
        """Until it answers /readyz with 200; raises with its log if it exits."""
        wait_ready(self.base_url, [self], timeout_s)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def kill_hard(self) -> None:
        """SIGKILL: no shutdown, no goodbye to Redis or the clients."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def restart(self) -> None:
        """Stop (gently) and start again with the same command (the same port)."""
        self.stop()
        self.process = self._spawn()


def irtrack_command(command: str, port: int) -> list[str]:
    """The argv of ``irtrack <command> --port <port>`` with this interpreter."""
    return [sys.executable, "-c", "from cli.app import main; main()", command, "--port", str(port)]


def irtrack_process(
    command: str, env: dict[str, str], log_dir: Path, role: str | None = None
) -> ChildProcess:
    """``irtrack <command>`` on a free port, logging to ``<log_dir>/<role>.log``."""
    port = free_port()
    role = role or command
    return ChildProcess(role, irtrack_command(command, port), env, log_dir / f"{role}.log", port)


def start_redis(port: int, log_dir: Path) -> ChildProcess:
    """``redis-server`` on ``port`` without persistence (a restart loses its data), logging to
    ``<log_dir>/redis.log``; a SIGKILL and ``start_redis`` again on the port: empty, same URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("this needs redis-server on the PATH (apt install redis-server)")
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    command += ["--appendonly", "no", "--dir", str(log_dir)]
    redis = ChildProcess("redis", command, dict(os.environ), log_dir / "redis.log", port)
    wait_until(lambda: redis_answers(port), 10, "redis-server to start")
    return redis


def redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_until(
    condition: Callable[[], bool], timeout_s: float, what: str, period_s: float = 0.1
) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(period_s)


def ready(base_url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200
    return False


def service_env(overrides: dict[str, str]) -> dict[str, str]:
    """This process's environment without a Redis URL of its own, plus ``overrides``."""
    inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "IRTRACK_REDIS_URL")}
    return {**inherited, **overrides, "IRTRACK_HOST": "127.0.0.1"}


@dataclass
class ServiceStack:
    """The processes of one backend; ``base_url`` is the API, ``metrics_url`` the process that
    runs the model (the API itself on the embedded queue, the worker with Redis)."""

    base_url: str
    metrics_url: str
    children: list[ChildProcess] = field(default_factory=list)

    @property
    def pids(self) -> dict[str, int]:
        return {child.role: child.pid for child in self.children}


@contextlib.contextmanager
def service_stack(
    backend: str, overrides: dict[str, str], startup_timeout_s: float = 300.0
) -> Iterator[ServiceStack]:
    """Start the backend's processes, wait until the API is ready, stop them all at the end."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    env = service_env(overrides)
    with tempfile.TemporaryDirectory(prefix=f"irtrack-bench-{backend}-") as workdir:
        log_dir = Path(workdir)
        children: list[ChildProcess] = []
        try:
            if backend == "redis":
                redis_port = free_port()
                children.append(start_redis(redis_port, log_dir))
                env["IRTRACK_REDIS_URL"] = redis_url(redis_port)
                children.append(irtrack_process("worker", env, log_dir))
            api = irtrack_process("serve", env, log_dir, role="api")
            children.append(api)
            stack = ServiceStack(api.base_url, children[-2 if backend == "redis" else -1].base_url)
            stack.children = children
            wait_ready(stack.base_url, stack.children, startup_timeout_s)
            yield stack
        finally:
            for child in reversed(children):  # the API first: it drains its streams
                child.stop()


def wait_ready(base_url: str, children: list[ChildProcess], timeout_s: float) -> None:
    """Until ``base_url`` answers /readyz with 200; raises with the logs if a child exits."""
    deadline = time.monotonic() + timeout_s
    while not ready(base_url):
        for child in children:
            child.check_running()
        if time.monotonic() > deadline:
            tails = "\n".join(f"--- {c.role}:\n{c.log_tail()}" for c in children)
            raise RuntimeError(f"{base_url} was not ready within {timeout_s:g} s\n{tails}")
        time.sleep(0.2)


def frame_counters(base_url: str) -> dict[str, float]:
    """received / processed / dropped / failed from a process's /metrics, summed over labels."""
    totals = dict.fromkeys(("received", "processed", "dropped", "failed"), 0.0)
    for line in httpx.get(f"{base_url}/metrics", timeout=10).text.splitlines():
        for name in totals:
            if line.startswith(f"irtrack_frames_{name}_total"):
                totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def counters_balance(base_urls: Sequence[str], settle_s: float = 10.0) -> bool:
    """received = processed + dropped + failed on every process, once in-flight frames ended."""

    def balanced(url: str) -> bool:
        totals = frame_counters(url)
        return totals["received"] == totals["processed"] + totals["dropped"] + totals["failed"]

    deadline = time.monotonic() + settle_s
    while not all(balanced(url) for url in base_urls):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True

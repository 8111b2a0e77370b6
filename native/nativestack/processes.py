"""Start programs, wait for them by polling with a deadline, stop them by PID."""

import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Self, TypeVar

T = TypeVar("T")


# Below Linux's ephemeral range (32768-60999), so an outgoing connection of some other process
# cannot take a port between the moment we pick it and the moment our program binds it.
_PORT_RANGE = (20000, 32767)
# Ports handed out in this run: a program's ports are picked before it starts, so a free port
# picked twice (~1% per pipeline start, more over a session) would make two programs collide.
_handed_out: set[int] = set()


def free_port() -> int:
    for _ in range(100):
        port = random.randint(*_PORT_RANGE)
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port in {_PORT_RANGE}")


def stop_everything_on_sigterm() -> None:
    """Turn SIGTERM (CI time-outs, `timeout`, `kill`) into KeyboardInterrupt: it unwinds fixtures
    and `finally` blocks, so every process started is stopped by its PID."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)


class ProcessExited(RuntimeError):
    """The program a test waits for is dead: waiting longer cannot help."""


def wait_until(probe: Callable[[], T | None], what: str, timeout: float = 30.0, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
            if result:
                return result
        except ProcessExited:
            raise
        except Exception as error:  # the thing polled for may not be up yet
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


@dataclass
class Process:
    """A program started by a test; its output goes to `log`."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def ensure_alive(self) -> None:
        if not self.alive():
            tail = "\n".join(self.output().splitlines()[-15:])
            raise ProcessExited(f"{self.name} exited with {self.popen.returncode}:\n{tail}")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM by PID, wait, then SIGKILL the process group if it hangs. Returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.pid, signal.SIGKILL)  # own session: takes any children with it
            return self.popen.wait(timeout=timeout)


class StoppedOnExit:
    """`with start_stack(...) as stack:` stops every process the stack started, by PID, however
    the block ends (Ctrl-C and SIGTERM included, see stop_everything_on_sigterm)."""

    def processes(self) -> list["Process"]:
        """Everything it started, in stop order."""
        raise NotImplementedError

    def stop(self) -> None:
        for process in self.processes():
            process.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log_dir: Path, cwd: Path | None = None) -> Process:
    """Start `argv` in its own session (so a hung tree can be killed whole), output to a log file."""
    log = log_dir / f"{name}.log"
    # Not the caller's OTEL_*/PROMETHEUS_* settings: every program gets exactly what it is given.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "PROMETHEUS_"))}
    with log.open("wb") as sink:
        popen = subprocess.Popen(
            list(argv),
            env={**inherited, **env},
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(name, popen, log)

"""A private network namespace for a test: its own loopback, carrying a few addresses that look
like pod IPs (the API server refuses loopback addresses in EndpointSlices), reachable from
nowhere else. Programs run in it through `nsenter`; the test's own client calls run in it on
threads that joined it (a network namespace belongs to a thread, not to the whole process).
Needs root (CI and our machines run as root)."""

import ctypes
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import ParamSpec, TypeVar

from nativestack.processes import Process, start, wait_until

T = TypeVar("T")
P = ParamSpec("P")
CLONE_NEWNET = 0x40000000
_READY = "network namespace ready"


def _join(namespace: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(namespace, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns({namespace}): {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class NetworkNamespace:
    holder: Process  # the namespace lives as long as this process
    addresses: list[str]
    _threads: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return f"/proc/{self.holder.pid}/ns/net"

    def launcher(self) -> list[str]:
        """Prefix for a program's argv that runs it inside the namespace."""
        return ["nsenter", f"--net={self.path}", "--"]

    def call(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`function(*args, **kwargs)` on a thread inside the namespace (its sockets live there)."""
        if self._threads is None:
            self._threads = ThreadPoolExecutor(4, "netns", initializer=_join, initargs=(self.path,))
        return self._threads.submit(function, *args, **kwargs).result()

    def stop(self) -> None:
        if self._threads is not None:
            self._threads.shutdown()
        self.holder.stop()


def start_network_namespace(workdir: Path, addresses: Sequence[str]) -> NetworkNamespace:
    """A new namespace with `lo` up and each of `addresses` on it as a /32."""
    steps = ["ip link set lo up", *(f"ip addr add {address}/32 dev lo" for address in addresses)]
    script = " && ".join([*steps, f"echo '{_READY}'", "exec sleep infinity"])
    holder = start("netns", ["unshare", "--net", "--", "sh", "-c", script], {}, workdir)

    def ready() -> bool:
        holder.ensure_alive()
        return _READY in holder.output()

    try:
        wait_until(ready, "the network namespace", timeout=10)
    except BaseException:
        holder.stop()
        raise
    return NetworkNamespace(holder, list(addresses))

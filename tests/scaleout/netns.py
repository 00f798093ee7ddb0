"""Hosts as Linux network namespaces on one private bridge, for tests that need real links to cut.

Every namespace, veth pair, bridge and address is created inside namespaces this module makes
(one extra namespace plays the switch), so nothing touches the machine's own network: the root
namespace gains no interface, route or address. Needs root and `ip` from iproute2.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import socket
import subprocess
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

SUBNET = "10.213.37"
"""A /24 of 10.0.0.0/8; it exists only inside the test's namespaces, so it cannot clash with the host's."""

_CLONE_NEWNET = 0x40000000
_NETNS_DIR = "/run/netns"


class NetnsError(RuntimeError):
    """An `ip` command failed; the message has the command and its stderr."""


def ip(*args: str) -> None:
    """Run `ip ARGS`, raising NetnsError with its stderr on failure."""
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=False)
    if result.returncode != 0:
        raise NetnsError(f"`ip {' '.join(args)}` failed ({result.returncode}): {result.stderr.strip()}")


@dataclass(frozen=True)
class Host:
    """One namespace with one interface, `eth0`, plugged into the switch at port `port`."""

    name: str
    netns: str
    address: str
    port: str

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` run inside this host (`ip netns exec` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def call(self, fn: Callable[[], T]) -> T:
        """Run `fn` in a thread that joined this host's network namespace (sockets it makes stay there)."""
        outcome: list[T] = []
        failure: list[BaseException] = []

        def run() -> None:
            try:
                _enter(self.netns)
                outcome.append(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                failure.append(exc)

        thread = threading.Thread(target=run, name=f"netns-{self.name}", daemon=True)
        thread.start()
        thread.join()
        if failure:
            raise failure[0]
        return outcome[0]


def _enter(netns: str) -> None:
    """setns(2) for the calling thread only: network namespaces are per thread, so the rest stays put."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(_NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class Network:
    """A switch namespace with a bridge, and hosts wired to it by veth pairs; `close()` removes them all.

    Use as a context manager: namespaces are deleted on exit even when the test failed. Deleting a
    namespace destroys the veth ends inside it, so no interface outlives the test (processes still
    running inside must be killed first by their owner, or they keep the namespace alive unnamed).
    """

    def __init__(self, prefix: str | None = None) -> None:
        sweep_orphans()
        self.prefix = prefix or f"oa{os.getpid()}-{uuid.uuid4().hex[:4]}"
        self.switch = f"{self.prefix}-sw"
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._add_namespace(self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        ip("-n", self.switch, "link", "set", "br0", "up")

    def __enter__(self) -> Network:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _add_namespace(self, netns: str) -> None:
        ip("netns", "add", netns)
        self._namespaces.append(netns)
        ip("-n", netns, "link", "set", "lo", "up")

    def add_host(self, name: str) -> Host:
        """A new namespace with `eth0` at the next address of SUBNET, plugged into the bridge."""
        netns = f"{self.prefix}-{name}"
        port = f"p{len(self.hosts)}"
        address = f"{SUBNET}.{len(self.hosts) + 1}"
        self._add_namespace(netns)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", netns)
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", netns, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", netns, "link", "set", "eth0", "up")
        host = Host(name, netns, address, port)
        self.hosts[name] = host
        return host

    def unplug(self, host: Host) -> None:
        """Take the switch side of the host's link down: the host sees NO-CARRIER, packets are lost."""
        ip("-n", self.switch, "link", "set", host.port, "down")

    def plug(self, host: Host) -> None:
        ip("-n", self.switch, "link", "set", host.port, "up")

    def close(self) -> None:
        """Delete every namespace this network made (the hosts first, then the switch)."""
        errors = []
        for netns in reversed(self._namespaces):
            try:
                ip("netns", "del", netns)
            except NetnsError as exc:
                errors.append(str(exc))
        self._namespaces.clear()
        if errors:
            raise NetnsError("; ".join(errors))


def sweep_orphans() -> list[str]:
    """Delete namespaces left by a test process that died without cleaning up (named ``oa<pid>-...``).

    Teardown normally removes them; a SIGKILLed pytest cannot. Only names whose pid is no longer
    running are touched, so concurrent test sessions keep theirs.
    """
    removed = []
    try:
        names = os.listdir(_NETNS_DIR)
    except FileNotFoundError:
        return removed
    for name in names:
        match = re.fullmatch(r"oa(\d+)-[0-9a-f]{4}-.+", name)
        if match is None or _alive(int(match.group(1))):
            continue
        with contextlib.suppress(NetnsError):
            ip("netns", "del", name)
            removed.append(name)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def namespaces_usable() -> tuple[bool, str]:
    """Whether this machine lets us build a Network (root, `ip`, netns and veth allowed), and why not."""
    try:
        with Network() as network:
            a, b = network.add_host("a"), network.add_host("b")
            with contextlib.closing(_listener(b)) as server:
                a.call(lambda: _connect(b.address, server.getsockname()[1]))
    except (NetnsError, OSError, subprocess.SubprocessError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    return True, "network namespaces, veth pairs and a bridge work here"


def _listener(host: Host) -> socket.socket:
    def make() -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((host.address, 0))
        sock.listen(1)
        return sock

    return host.call(make)


def _connect(address: str, port: int) -> None:
    with socket.create_connection((address, port), timeout=5):
        pass

"""The scale-out topology of the tests: app hosts -> gateway collectors -> an archive collector.

Two modes build the same topology. ``netns``: every host is a network namespace on a private
bridge (see netns.py), collectors listen on their host's address, and cutting an app host's link
is `ip link set ... down` on the switch. ``loopback``: everything on 127.0.0.1 with free ports,
and an app host whose link can be cut talks to the gateways through a LinkProxy that stops
forwarding (packets go unanswered, as on a dead link). The tests run netns where the machine
allows it and loopback otherwise, and say which ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from e2e.harness import DEFAULT_CONFIG, Collector

from .netns import Host, Network, namespaces_usable

ROOT = Path(__file__).resolve().parents[2]
GATEWAY_CONFIG = ROOT / "collector-gateway.yaml"
APP_HOST = Path(__file__).resolve().parent / "app_host.py"
MODE_ENV = "OTEL_AUDIT_SCALEOUT_MODE"
"""Force ``netns`` or ``loopback``; unset, netns is used when the machine allows it."""


class HostCollector(Collector):
    """A harness Collector that runs inside a namespace host, listening on the host's address.

    In a namespace the ports are the standard ones (each host has its own), the binary is started
    through `ip netns exec` (which execs it, so SIGKILL reaches the collector itself), and the
    health check is made from a thread inside the namespace.
    """

    def __init__(
        self,
        binary: Path,
        workdir: Path,
        host: Host,
        *,
        config: Path = DEFAULT_CONFIG,
        env: Mapping[str, str] | None = None,
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        wrapper = workdir / "in-netns.sh"
        wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {host.netns} {binary} "$@"\n')
        wrapper.chmod(0o755)
        super().__init__(wrapper, workdir, config=config, env=env)
        self.host = host
        self.grpc_port, self.http_port, self.health_port = 4317, 4318, 13133

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host.address}:{self.grpc_port}"

    @property
    def grpc_address(self) -> str:
        return f"{self.host.address}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host.address}:{self.http_port}"

    @property
    def health_url(self) -> str:
        return f"http://{self.host.address}:{self.health_port}/"

    def environment(self) -> dict[str, str]:
        return {
            **super().environment(),
            "OTEL_AUDIT_GRPC_ENDPOINT": self.grpc_address,
            "OTEL_AUDIT_HTTP_ENDPOINT": f"{self.host.address}:{self.http_port}",
            "OTEL_AUDIT_HEALTH_ENDPOINT": f"{self.host.address}:{self.health_port}",
            **self.extra_env,
        }

    def _healthy(self) -> bool:
        return self.host.call(super()._healthy)


class LinkProxy:
    """A TCP forwarder on 127.0.0.1 that can play a dead link: `cut()` stops moving bytes both ways.

    While cut, connections stay open and data waits unanswered, as packets lost on a link that
    is down; `restore()` moves the bytes again. One thread serves every connection.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = int(self._listener.getsockname()[1])
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._peers: dict[socket.socket, socket.socket] = {}
        self._up = threading.Event()
        self._up.set()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"link-proxy-{self.port}", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def cut(self) -> None:
        self._up.clear()

    def restore(self) -> None:
        self._up.set()

    def close(self) -> None:
        self._closed = True
        self._thread.join(5)
        for sock in [self._listener, *self._peers]:
            sock.close()

    def _run(self) -> None:
        while not self._closed:
            if not self._up.is_set():
                time.sleep(0.05)
                continue
            for key, _ in self._selector.select(timeout=0.1):
                sock = key.fileobj
                assert isinstance(sock, socket.socket)
                if sock is self._listener:
                    self._accept()
                else:
                    self._pump(sock)

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        for sock in (client, server):
            sock.setblocking(False)
            self._selector.register(sock, selectors.EVENT_READ, None)
        self._peers[client], self._peers[server] = server, client

    def _pump(self, sock: socket.socket) -> None:
        peer = self._peers.get(sock)
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if peer is not None and data:
            with contextlib.suppress(OSError):
                peer.setblocking(True)
                peer.sendall(data)
                peer.setblocking(False)
                return
        for end in (sock, peer):
            if end is not None and end in self._peers:
                self._selector.unregister(end)
                del self._peers[end]
                end.close()


class AppProcess:
    """One app_host.py process: records COUNT audit events, flushes, exits; its acked ids are in a file."""

    def __init__(self, name: str, argv: list[str], ids_path: Path, log_path: Path) -> None:
        self.name = name
        self.ids_path = ids_path
        self.lines: list[str] = []
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=self._log, stdin=subprocess.DEVNULL, text=True
        )
        self._reader = threading.Thread(target=self._read, name=f"app-{name}-stdout", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.strip())

    def line(self, prefix: str) -> str | None:
        return next((line for line in self.lines if line.startswith(prefix)), None)

    def wait(self, timeout_s: float) -> int:
        try:
            return self.process.wait(timeout_s)
        finally:
            self._reader.join(5)
            self._log.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()

    def sender_stats(self) -> dict[str, int]:
        line = self.line("stats ")
        assert line is not None, f"{self.name} printed no stats: {self.lines}"
        return dict(json.loads(line.removeprefix("stats ")))

    def acked_ids(self) -> list[str]:
        """Ids whose record() returned, in the order they were recorded."""
        return self.ids_path.read_text().split()


@dataclass
class Site:
    """A running topology; build it with :func:`build_site`."""

    mode: str
    workdir: Path
    archive: Collector
    gateways: list[Collector]
    app_hosts: dict[str, Host | None]
    network: Network | None = None
    proxies: dict[str, list[LinkProxy]] = field(default_factory=dict)
    apps: list[AppProcess] = field(default_factory=list)

    def endpoints(self, app: str) -> str:
        """The comma-separated gateway list the app is configured with (through its proxies if any)."""
        if app in self.proxies:
            return ",".join(f"http://{proxy.address}" for proxy in self.proxies[app])
        return ",".join(gateway.grpc_endpoint for gateway in self.gateways)

    def start_app(self, app: str, count: int, rate: float) -> AppProcess:
        ids = self.workdir / f"{app}.ids"
        argv = [
            sys.executable, str(APP_HOST), app, str(self.workdir / f"{app}-wal"),
            self.endpoints(app), str(count), str(rate), str(ids),
        ]  # fmt: skip
        host = self.app_hosts[app]
        process = AppProcess(app, host.command(argv) if host else argv, ids, self.workdir / f"{app}.log")
        self.apps.append(process)
        return process

    def cut_link(self, app: str) -> None:
        host = self.app_hosts[app]
        if self.network is not None and host is not None:
            self.network.unplug(host)
        else:
            for proxy in self.proxies[app]:
                proxy.cut()

    def restore_link(self, app: str) -> None:
        host = self.app_hosts[app]
        if self.network is not None and host is not None:
            self.network.plug(host)
        else:
            for proxy in self.proxies[app]:
                proxy.restore()

    def close(self) -> None:
        """Kill every process, then remove proxies and namespaces; safe after any failure."""
        for app in self.apps:
            app.kill()
        for collector in [*self.gateways, self.archive]:
            collector.close()
        for proxies in self.proxies.values():
            for proxy in proxies:
                proxy.close()
        if self.network is not None:
            self.network.close()


def choose_mode() -> tuple[str, str]:
    """``netns`` or ``loopback``, and why: $OTEL_AUDIT_SCALEOUT_MODE, else what the machine allows."""
    forced = os.environ.get(MODE_ENV, "").strip().lower()
    if forced in ("netns", "loopback"):
        return forced, f"forced by {MODE_ENV}"
    usable, why = namespaces_usable()
    return ("netns", why) if usable else ("loopback", f"network namespaces unusable here ({why})")


def gateway_env(archive: Collector) -> dict[str, str]:
    return {
        "OTEL_AUDIT_FORWARD_ENDPOINT": archive.grpc_address,
        "OTEL_AUDIT_FORWARD_INSECURE": "true",
        "OTEL_AUDIT_FORWARD_MAX_BACKOFF": "300ms",
    }


@contextlib.contextmanager
def build_site(
    binary: Path,
    workdir: Path,
    *,
    mode: str,
    apps: int,
    gateways: int,
    linkable: tuple[str, ...] = (),
) -> Iterator[Site]:
    """Start the archive and the gateways (apps are started by the test), and tear it all down after.

    ``linkable`` names the app hosts whose link the test may cut (in loopback mode only those get
    proxies, so the others talk to the gateways directly as in netns mode).
    """
    network = Network() if mode == "netns" else None
    site: Site | None = None
    try:
        def place(name: str, config: Path, env: Mapping[str, str] | None = None) -> Collector:
            if network is not None:
                return HostCollector(binary, workdir / name, network.add_host(name), config=config, env=env)
            return Collector(binary, workdir / name, config=config, env=env)

        archive = place("archive", DEFAULT_CONFIG)
        site = Site(mode, workdir, archive, [], {}, network)
        archive.start()
        for index in range(1, gateways + 1):
            gateway = place(f"gw{index}", GATEWAY_CONFIG, gateway_env(archive))
            site.gateways.append(gateway)
            gateway.start()
        for index in range(1, apps + 1):
            name = f"app{index}"
            site.app_hosts[name] = network.add_host(name) if network is not None else None
            if network is None and name in linkable:
                site.proxies[name] = [LinkProxy(("127.0.0.1", g.grpc_port)) for g in site.gateways]
        yield site
    finally:
        if site is not None:
            site.close()
        elif network is not None:
            network.close()

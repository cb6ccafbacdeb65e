"""Descriptors and connection caps: no client can take the hub's last file descriptor.

Every connection to the hub costs one file descriptor, and so does the hub's own
connection to the Gateway. With systemd's default ``LimitNOFILE`` (soft 1024) a
thousand idle TCP connections to the front door or the ZeroMQ ports were enough to
leave new clients unanswered and the upstream unable to reconnect ("Too many open
files"). Three layers keep that from happening:

1. **A higher limit.** :func:`raise_nofile` lifts the soft ``RLIMIT_NOFILE`` to the
   hard limit at start (``ibhub run``) and logs what it got; ``deploy/ibhub.service``
   sets ``LimitNOFILE=65536``.
2. **A reserve.** ``fd_reserve`` descriptors (default 64) are never handed to
   clients: the upstream socket, the order journal (SQLite: database, WAL, shared
   memory), the alert file, the /health server, ZeroMQ's own mailboxes and whatever
   the hub opens while running. A listener refuses new peers once the process's free
   descriptors fall to the reserve (:meth:`Limits.fds_low`), whatever its own count.
3. **A cap per listener** (``max_tws_connections``, ``max_rpc_connections``,
   ``max_pub_connections``), by default an equal share of what the limit leaves after
   the reserve (:meth:`Limits.from_settings`).

How each listener refuses (docs/operations.md, "Connection limits"):

* **TWS front door** (asyncio): the connection is accepted (that is the only way to
  see it), then answered like a Gateway that will not take it: the version handshake,
  then ``error(-1, 502, "... N TWS API connections already open ...")`` and a close,
  so an ib_insync/ibapi script logs the reason and its connect fails at once. With
  the reserve reached it is closed without a word. Every connection must send
  START_API within ``TWS_HANDSHAKE_TIMEOUT`` or it is closed: an idle socket that
  never speaks holds nothing for long.
* **ZeroMQ ROUTER and PUB** (:class:`ZmqListenerGuard`): libzmq accepts on its own
  I/O thread and has no per-peer refusal. A peer that never completes the ZMTP
  greeting is closed after ``ZMQ_HANDSHAKE_IVL`` (5 s, libzmq's default is 30 s);
  one that stops answering ZMTP heartbeats after ``HEARTBEAT_TIMEOUT``. A socket
  monitor counts accepted minus disconnected peers. At the cap or at the reserve the
  listener stops accepting: ``unbind``, the only way libzmq offers, which also drops
  the peers of that endpoint (ZeroMQ clients reconnect by themselves; the SDK
  recovers its topics from snapshots). It binds again after ``REBIND_HOLD`` seconds
  once the process is back under the low-water mark. An unbound endpoint refuses
  connects at the TCP level (connection refused), which a client sees at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

import zmq
import zmq.asyncio

log = logging.getLogger(__name__)

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no RLIMIT_NOFILE
    resource = None  # type: ignore[assignment]

#: the most the hub asks for when the hard limit is "unlimited" (Linux: nr_open)
NOFILE_CEILING = 1 << 20
#: descriptors the hub needs before any client (interpreter, libraries, sockets, journal)
BASELINE_FDS = 64
#: concurrent /health and /metrics connections (scrapers and probes are few); they live
#: in the descriptor reserve, so they never crowd out the upstream
HTTP_MAX_CONNECTIONS = 16
TWS_HANDSHAKE_TIMEOUT = 10.0  # seconds from accept to START_API
ZMQ_HANDSHAKE_IVL = 5.0  # seconds a ZeroMQ peer has to complete the ZMTP greeting
HEARTBEAT_IVL = 5.0  # ZMTP PING every ... (libzmq answers PINGs itself)
HEARTBEAT_TIMEOUT = 15.0  # ... and drops a peer that has not answered for this long
REBIND_HOLD = 2.0  # seconds a ZeroMQ listener stays unbound after refusing
FD_RECOUNT = 0.5  # seconds a count of open descriptors is reused far from the reserve
LOW_WATER = 0.8  # rebind once peers and used descriptors are under this share of the cap


def nofile_limits() -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE; (0, 0) where the platform has none."""
    if resource is None:  # pragma: no cover
        return 0, 0
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return int(soft), int(hard)


def raise_nofile() -> tuple[int, int]:
    """Lift the soft descriptor limit to the hard one (logged); returns (soft, hard).

    The hard limit is what the administrator allows (systemd ``LimitNOFILE=``, ``ulimit
    -Hn``); the soft one is what a process starts with (often 1024). Nothing is gained by
    stopping below the hard limit: descriptors cost kernel memory only when used.
    """
    if resource is None:  # pragma: no cover
        return 0, 0
    soft, hard = nofile_limits()
    target = NOFILE_CEILING if hard == resource.RLIM_INFINITY else hard
    target = max(soft, min(target, NOFILE_CEILING))
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d to %d: %s", soft, target, exc)
        else:
            soft = target
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    log.info("open-file limit %d (hard %s)", soft, shown)
    if soft < 4096:
        log.warning(
            "open-file limit %d is low for a hub with many clients; raise it "
            "(systemd LimitNOFILE=65536, ulimit -n) — see docs/operations.md",
            soft,
        )
    return soft, hard


def open_fds() -> int | None:
    """Descriptors this process has open now (None where that cannot be read)."""
    for path in ("/proc/self/fd", "/dev/fd"):
        try:
            # listdir itself holds one descriptor while it runs
            return len(os.listdir(path)) - 1
        except OSError:
            continue
    return None  # pragma: no cover


@dataclass
class ListenerStats:
    """What one listener reports in /metrics, /health and ``ibhub status``."""

    name: str
    cap: int
    open: int = 0
    accepted: int = 0
    refused: int = 0
    refusing: bool = False  # a ZeroMQ listener unbound for now

    def as_dict(self) -> dict[str, Any]:
        return {
            "open": self.open,
            "max": self.cap,
            "accepted": self.accepted,
            "refused": self.refused,
            "refusing": self.refusing,
        }


@dataclass
class Limits:
    """The process's descriptor budget and each listener's cap (see module docstring)."""

    soft: int
    reserve: int
    listeners: dict[str, ListenerStats] = field(default_factory=dict)
    # the last count of open descriptors and when it was taken (see _used)
    _fds: int | None = field(default=None, init=False, repr=False)
    _fds_at: float = field(default=0.0, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any, soft: int | None = None) -> Limits:
        if soft is None:
            soft = nofile_limits()[0]
        reserve = int(getattr(settings, "fd_reserve", 64))
        # What clients may use, shared by the three listeners (the HTTP server's few
        # scrapers live in the reserve).
        usable = max(3, (soft or 1024) - reserve - BASELINE_FDS)
        share = max(1, usable // 3)
        limits = cls(soft=soft, reserve=reserve)
        for name in ("tws", "rpc", "pub"):
            cap = getattr(settings, f"max_{name}_connections", None)
            limits.listeners[name] = ListenerStats(name, int(cap) if cap else share)
        limits.listeners["http"] = ListenerStats("http", HTTP_MAX_CONNECTIONS)
        return limits

    def stats(self, name: str) -> ListenerStats:
        return self.listeners[name]

    def fds_low(self) -> bool:
        """True once free descriptors are down to the reserve: refuse every new client."""
        if not self.soft:
            return False
        used = self._used()
        return used is not None and used >= self.soft - self.reserve

    def fds_recovered(self) -> bool:
        """Back under the low-water mark: a refusing listener may accept again."""
        if not self.soft:
            return True
        used = self._used(fresh=True)
        return used is None or used < (self.soft - self.reserve) * LOW_WATER

    def _used(self, fresh: bool = False) -> int | None:
        """Open descriptors, counted again when the count is old or near the line.

        Counting lists /proc/self/fd: ~2 ms at 5,000 descriptors, on the hub's loop,
        for every accept in a flood. Far from the line a count up to ``FD_RECOUNT``
        seconds old will do (the caps bound what can open meanwhile); within two
        reserves of it every check counts.
        """
        now = time.monotonic()
        line = self.soft - self.reserve
        if (
            fresh
            or self._fds is None
            or now - self._fds_at > FD_RECOUNT
            or self._fds >= line - self.reserve
        ):
            self._fds = open_fds()
            self._fds_at = now
        return self._fds

    def report(self) -> dict[str, Any]:
        """The ``connections`` section of /health and the status reply."""
        return {
            "open_files": open_fds(),
            "open_files_max": self.soft,
            "reserve": self.reserve,
            "listeners": {n: s.as_dict() for n, s in self.listeners.items()},
        }


def limits_of(hub: Any) -> Limits:
    """The hub's :class:`Limits`, made from its settings on first use."""
    limits = getattr(hub, "limits", None)
    if not isinstance(limits, Limits):
        limits = Limits.from_settings(hub.settings)
        hub.limits = limits
    return limits


# ---------------------------------------------------------------------------- ZeroMQ


def harden_zmq_listener(sock: zmq.Socket[Any]) -> None:
    """Idle and dead peers go: a greeting deadline and ZMTP heartbeats (before bind)."""
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(ZMQ_HANDSHAKE_IVL * 1000))
    sock.setsockopt(zmq.HEARTBEAT_IVL, int(HEARTBEAT_IVL * 1000))
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, int(HEARTBEAT_TIMEOUT * 1000))


_MONITOR_EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CLOSED


class ZmqListenerGuard:
    """Counts one ZeroMQ listener's peers and stops accepting at its cap or the reserve.

    ``sock`` is bound to ``endpoint`` (a ``tcp://`` one: ipc and inproc peers cost no
    listener descriptors worth guarding, but are counted all the same). Runs as a task
    on the hub's loop, reading the socket's monitor.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        sock: zmq.Socket[Any],
        endpoint: str,
        stats: ListenerStats,
        limits: Limits,
    ) -> None:
        self._sock = sock
        self.endpoint = endpoint
        self.stats = stats
        self._limits = limits
        self._addr = f"inproc://ibhub-monitor-{stats.name}-{id(self):x}"
        sock.monitor(self._addr, _MONITOR_EVENTS)
        self._mon = ctx.socket(zmq.PAIR)
        self._mon.setsockopt(zmq.LINGER, 0)
        self._mon.connect(self._addr)
        self._task: asyncio.Task[None] | None = None
        self._unbound_at = 0.0
        # Unbound, and the monitor has not yet reported the listener closed: events
        # queued until then belong to peers the unbind dropped (libzmq sends no
        # per-peer event for those), so they are not counted.
        self._draining = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ibhub-guard-{self.stats.name}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        with contextlib.suppress(zmq.ZMQError):
            self._sock.disable_monitor()
        self._mon.close(linger=0)

    async def _run(self) -> None:
        while True:
            try:
                if self.stats.refusing:
                    # poll so the hold-off ends even when no event arrives
                    if await self._mon.poll(int(REBIND_HOLD * 500)):
                        self._event(await self._mon.recv_multipart())
                    self._maybe_rebind()
                else:
                    self._event(await self._mon.recv_multipart())
            except zmq.ZMQError as exc:
                if exc.errno in (zmq.ETERM, zmq.ENOTSOCK):
                    return
                log.warning("%s listener monitor: %s", self.stats.name, exc)

    def _event(self, frames: list[bytes]) -> None:
        if len(frames) < 2 or len(frames[0]) < 6:
            return
        event = int.from_bytes(frames[0][:2], "little")
        s = self.stats
        if self._draining:
            if event == zmq.EVENT_CLOSED:
                self._draining = False
                s.open = 0
            return
        if event == zmq.EVENT_ACCEPTED:
            s.open += 1
            s.accepted += 1
            if not s.refusing and (s.open >= s.cap or self._limits.fds_low()):
                self._stop_accepting()
        elif event == zmq.EVENT_DISCONNECTED:
            s.open = max(0, s.open - 1)

    def _stop_accepting(self) -> None:
        s = self.stats
        why = (
            f"{s.open} peers (max_{s.name}_connections {s.cap})"
            if s.open >= s.cap
            else f"open files at the reserve ({self._limits.soft} - {self._limits.reserve})"
        )
        try:
            self._sock.unbind(self.endpoint)
        except zmq.ZMQError as exc:
            log.error("%s listener: could not stop accepting on %s: %s", s.name, self.endpoint, exc)
            return
        s.refusing = True
        s.refused += 1
        self._draining = True
        self._unbound_at = time.monotonic()
        log.warning(
            "%s listener %s refuses new connections for now: %s; its peers are "
            "dropped and reconnect once it listens again",
            s.name,
            self.endpoint,
            why,
        )

    def _maybe_rebind(self) -> None:
        s = self.stats
        if self._draining or time.monotonic() - self._unbound_at < REBIND_HOLD:
            return
        if s.open >= s.cap * LOW_WATER or not self._limits.fds_recovered():
            return
        try:
            self._sock.bind(self.endpoint)
        except zmq.ZMQError as exc:
            log.warning(
                "%s listener: rebinding %s failed (%s); retrying", s.name, self.endpoint, exc
            )
            self._unbound_at = time.monotonic()
            return
        s.refusing = False
        log.info(
            "%s listener %s accepts connections again (%d peers)", s.name, self.endpoint, s.open
        )

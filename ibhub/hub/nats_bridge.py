"""The NATS JetStream bridge: the hub's PUB topics on NATS, its requests from NATS.

Started by the composition root only when ``nats_urls`` is set (``ibhub run --nats
URL``), so a hub without it never imports ``nats-py`` and its hot path is unchanged
(docs/scale-out.md, docs/performance.md "NATS bridge").

**Events.** :meth:`Fanout.tee` swaps the fan-out's publisher for a
:class:`~ibhub.hub.fanout.TeePublisher`: after its two ZeroMQ ``send()`` calls, each
publish (one per instrument per Gateway read, or one rare event) appends the topic and
the payload it already encoded to a list, and the first append of a loop turn wakes
:meth:`NatsBridge._pump`. The pump runs after the read, off the ZeroMQ path: it takes the
whole list and publishes each message on ``ibhub.<hub>.<topic>``
(:mod:`ibhub.natswire`) with the same payload, its sequence number in the
``Ibhub-Seq`` header and this hub process's epoch in ``Ibhub-Epoch``. Core NATS
publishes, no per-message JetStream acknowledgement: the stream ``IBHUB_<hub>``
captures the subjects server-side. A message the bridge
could not hand to NATS (never connected, connection closed, the client's reconnect
buffer full) is counted in ``unpublished``, never retried out of order: a consumer sees
the gap in ``Ibhub-Seq`` and recovers the last value (the SDK does).

**Requests.** The bridge subscribes ``ibhub.<hub>.rpc.*`` and hands every request to
:meth:`RpcServer.serve_payload`, the same decode / validate / registry / dispatch as the
ROUTER socket, with the peer ``nats:<user>``: leases bind to it, roles come from
``nats_roles`` (:class:`~ibhub.hub.security.RolePolicy`), names, ownership,
idempotency, risk and the live guard are the ZeroMQ code. The identity is the
subject's last token; the NATS server's permissions make it true (each user may
publish only on its own ``rpc.<user>``; deploy/nats/ and docs/scale-out.md).

**Faults.** NATS down never stops the hub: the connection is made in the background
and retried forever (``nats-py``'s reconnect, with every URL of ``nats_urls``); the
state, the counters and the last error are in ``ibhub status`` (``nats``), ``/health``
and ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import ssl
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from ibhub import natswire
from ibhub.config import ConfigError
from ibhub.hub.leases import Peer
from ibhub.hub.security import NATS_PEER
from ibhub.protocol import Reply
from ibhub.tasks import TaskSet
from ibhub.wire import encode

if TYPE_CHECKING:
    from ibhub.config import HubSettings
    from ibhub.hub.fanout import Fanout
    from ibhub.hub.requests import RpcServer

log = logging.getLogger(__name__)

PENDING_BYTES = 8 << 20  # nats-py's buffer while reconnecting; beyond it publishes fail
RECONNECT_WAIT = 0.5  # seconds between attempts on one server
STREAM_RETRY = 1.0  # seconds between attempts to create/update the stream
STREAM_CHECK = 5.0  # seconds between looks at the stream (leader, deleted)
BACKLOG_MAX = 10_000  # messages kept (in order) until the first connection; more: counted


class _Head(msgspec.Struct, array_like=True):
    """The first two fields of every array-like Event: its tag and its seq."""

    tag: Any
    seq: int


_head = msgspec.msgpack.Decoder(_Head).decode


#: nats-py internals the batch publisher writes to (checked when the bridge connects;
#: any missing: the public ``publish``, per message, is used instead).
_CLIENT_INTERNALS = ("_pending", "_pending_data_size", "_max_pending_size", "_flush_pending",
                     "_flush_queue", "_max_payload", "stats", "is_draining_pubs")


class BatchPublisher:
    """Appends a whole batch to nats-py's outgoing buffer and wakes its flusher once.

    ``nats.Client.publish`` costs ~4 us a message, ~8-10 us with two headers (measured:
    it validates the subject, encodes each header through a regex check, and wakes the
    flusher per message). The bridge's subjects are valid by construction
    (:mod:`ibhub.natswire`) and its headers differ only in the sequence number, so
    this writes the same ``HPUB`` command bytes (``nats.protocol.command.hpub_cmd``)
    with a header block made of one constant prefix and the number, keeps nats-py's
    rules (closed / draining connection, the reconnect buffer's limit, the server's
    maximum payload) and flushes once per batch. :func:`batch_publisher` returns None
    when this nats-py lacks an internal it relies on; the bridge then uses ``publish``.
    """

    def __init__(self, nc: Any, epoch: str) -> None:
        from nats.protocol.command import hpub_cmd

        self.nc = nc
        self._hpub = hpub_cmd
        self._head = (f"NATS/1.0\r\n{natswire.EPOCH_HEADER}: {epoch}\r\n"
                      f"{natswire.SEQ_HEADER}: ").encode()

    def add(self, subject: str, payload: bytes, seq: int) -> bool:
        """Queue one message; False if nats-py would refuse it now (then use
        ``publish``, which raises the reason)."""
        nc = self.nc
        size = len(payload)
        if nc.is_closed or nc.is_draining_pubs or size > nc._max_payload:
            return False
        if not nc.is_connected and (nc._max_pending_size <= 0 or
                                    size + nc._pending_data_size > nc._max_pending_size):
            return False
        cmd = self._hpub(subject, "", self._head + str(seq).encode() + b"\r\n\r\n", payload)
        nc._pending.append(cmd)
        nc._pending_data_size += len(cmd)
        stats = nc.stats
        stats["out_msgs"] += 1
        stats["out_bytes"] += size
        return True

    async def flush(self) -> None:
        """What ``publish`` does after each message, once per batch."""
        nc = self.nc
        if nc._max_pending_size > 0 and nc._pending_data_size > nc._max_pending_size:
            await nc._flush_pending(force_flush=True)
        elif nc._flush_queue is not None and nc._flush_queue.empty():
            await nc._flush_pending()


def batch_publisher(nc: Any, epoch: str) -> BatchPublisher | None:
    if not all(hasattr(nc, name) for name in _CLIENT_INTERNALS):
        log.warning("NATS bridge: this nats-py lacks %s; publishing message by message",
                    ", ".join(n for n in _CLIENT_INTERNALS if not hasattr(nc, n)))
        return None
    try:
        return BatchPublisher(nc, epoch)
    except ImportError:
        return None


def nats_options(s: HubSettings) -> dict[str, Any]:
    """``nats.connect`` keyword arguments for the hub's credentials and TLS."""
    opts: dict[str, Any] = {}
    if s.nats_user:
        opts["user"] = s.nats_user
        opts["password"] = s.nats_password
    if s.nats_token:
        opts["token"] = s.nats_token
    if s.nats_creds_file is not None:
        opts["user_credentials"] = str(s.nats_creds_file)
    if s.nats_nkey_seed_file is not None:
        opts["nkeys_seed"] = str(s.nats_nkey_seed_file)
    if s.nats_tls_ca_file is not None or s.nats_tls_cert_file is not None:
        ctx = ssl.create_default_context(
            cafile=str(s.nats_tls_ca_file) if s.nats_tls_ca_file else None)
        if s.nats_tls_cert_file is not None:
            ctx.load_cert_chain(str(s.nats_tls_cert_file),
                                str(s.nats_tls_key_file) if s.nats_tls_key_file else None)
        opts["tls"] = ctx
    return opts


class NatsBridge:
    """Mirrors the fan-out to NATS and serves requests from it (see the module doc)."""

    def __init__(self, settings: HubSettings, fanout: Fanout, rpc: RpcServer) -> None:
        if importlib.util.find_spec("nats") is None:
            raise ConfigError("nats_urls (--nats) needs the NATS client: "
                              "pip install 'ibhub[nats]'")
        try:  # TLS files are read now: a bad path fails the start, naming the setting
            self._options = nats_options(settings)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"nats_tls_*: cannot load the TLS files: {exc}") from None
        self.settings = settings
        self.hub = settings.nats_hub
        self.urls = list(settings.nats_urls)
        self.rpc = rpc
        self.state = "connecting"  # connecting | connected | reconnecting | closed
        self.stream = "pending"  # "ok", or why the stream is not (yet) there
        self.streams_made = 0  # successful creates/updates of the stream (1 per connection)
        self.published = 0
        self.unpublished = 0
        self.reconnects = 0
        self.disconnects = 0
        self.requests = 0
        self.last_error = ""
        self.connected_url = ""
        self._wake_event = asyncio.Event()
        self._tee = fanout.tee(self._wake_event.set)
        self._replies: list[tuple[str, bytes]] = []
        # Published before the first connection (and its stream) was up: kept, in order,
        # up to BACKLOG_MAX, so the stream starts with the hub's first status and account
        # events. Later outages are nats-py's reconnect buffer (PENDING_BYTES).
        self._backlog: list[tuple[bytes, bytes]] | None = []
        self._subjects: dict[bytes, str | None] = {}
        self._nc: Any = None
        self._batch: BatchPublisher | None = None  # set once connected
        self._tasks = TaskSet(log)
        self._prefix = natswire.prefix(self.hub)
        self.epoch = str(time.time_ns())  # this hub process's sequence numbers' epoch

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        """Connect in the background: the hub serves ZeroMQ whether NATS is up or not."""
        self._tasks.spawn(self._pump(), name="ibhub-nats-pump")
        self._tasks.spawn(self._connect(), name="ibhub-nats-connect")

    async def stop(self) -> None:
        await self._tasks.close()
        self.state = "closed"
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.flush(timeout=1), 1.5)
            with contextlib.suppress(Exception):
                await nc.close()
        self.state = "closed"

    def report(self) -> dict[str, Any]:
        """State and counters for ``ibhub status``, ``/health`` and ``/metrics``."""
        return {
            "state": self.state, "hub": self.hub, "url": self.connected_url,
            "stream": self.stream, "published": self.published,
            "unpublished": self.unpublished, "reconnects": self.reconnects,
            "disconnects": self.disconnects, "requests": self.requests,
            "last_error": self.last_error,
        }

    # ------------------------------------------------------------------ connection

    async def _connect(self) -> None:
        import nats  # the `nats` extra; imported only when the bridge runs

        nc = nats.NATS()
        self._nc = nc
        try:
            await nc.connect(
                servers=self.urls, name=f"ibhub-{self.hub}", allow_reconnect=True,
                max_reconnect_attempts=-1,
                dont_randomize=True,  # the first URL is the preferred node (docs/scale-out.md)
                connect_timeout=2, pending_size=PENDING_BYTES, ping_interval=5,
                max_outstanding_pings=2, error_cb=self._on_error,
                disconnected_cb=self._on_disconnected, reconnected_cb=self._on_reconnected,
                closed_cb=self._on_closed,
                **{"reconnect_time_wait": RECONNECT_WAIT, **self._options},
            )
        except Exception as exc:  # bad credentials, TLS: reported, the hub keeps running
            self.state = "closed"
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.error("NATS bridge cannot connect to %s: %s", ", ".join(self.urls),
                      self.last_error)
            return
        self.state = "connected"
        self.connected_url = _url_of(nc)
        self._batch = batch_publisher(nc, self.epoch)
        log.info("NATS bridge connected to %s as hub %r", self.connected_url, self.hub)
        await nc.subscribe(natswire.rpc_filter(self.hub), cb=self._on_request)
        await self._ensure_stream(first=True)
        await self._watch_stream()

    async def _watch_stream(self) -> None:
        """Every STREAM_CHECK seconds: is the stream there and led? ``stream`` says so
        (``/health`` degrades while it is not: a leader election after a node loss, a
        JetStream outage); a stream someone deleted is made again."""
        from nats.js.errors import NotFoundError

        while True:
            await asyncio.sleep(STREAM_CHECK)
            if self._nc is None or not self._nc.is_connected:
                continue
            try:
                info = await self._nc.jetstream(timeout=2).stream_info(
                    natswire.stream_name(self.hub))
            except NotFoundError:
                log.warning("NATS stream %s is gone; making it again",
                            natswire.stream_name(self.hub))
                self.stream = "missing"
                await self._ensure_stream()
                continue
            except Exception as exc:
                why = f"unavailable: {type(exc).__name__}: {exc}"[:200]
                if why != self.stream:
                    log.warning("NATS stream %s %s", natswire.stream_name(self.hub), why)
                self.stream = why
                continue
            cluster = info.cluster
            if cluster is not None and cluster.name and not cluster.leader:
                self.stream = "unavailable: no leader"
            elif self.stream != "ok":
                log.info("NATS stream %s available again", natswire.stream_name(self.hub))
                self.stream = "ok"

    def _flush_backlog(self) -> None:
        """From now on publish directly: what waited goes out first, on the next turn."""
        backlog, self._backlog = self._backlog, None
        if backlog is not None:
            self._tee.put_back(backlog)

    async def _ensure_stream(self, first: bool = False) -> None:
        """Create (or bring up to date) the hub's stream; retried until JetStream answers
        (a cluster elects its meta leader a few seconds after it starts)."""
        from nats.js.api import DiscardPolicy, StorageType, StreamConfig

        s = self.settings
        config = StreamConfig(
            name=natswire.stream_name(self.hub),
            subjects=natswire.stream_subjects(self.hub),
            max_age=s.nats_stream_max_age,
            max_bytes=s.nats_stream_max_bytes,
            num_replicas=s.nats_stream_replicas,
            storage=StorageType(s.nats_stream_storage),
            discard=DiscardPolicy.OLD,
            allow_direct=True,  # last value per subject answered by any replica
        )
        js = self._nc.jetstream(timeout=3)
        while True:
            try:
                try:
                    await js.add_stream(config)
                except Exception as exc:
                    if "already in use" not in str(exc):
                        raise
                    await js.update_stream(config)
            except Exception as exc:
                if first:  # publish (core NATS subscribers) while the stream is retried
                    self._flush_backlog()
                why = f"{type(exc).__name__}: {exc}"[:200]
                if why != self.stream:  # once per distinct reason: no log flood
                    log.warning("NATS stream %s not ready: %s; retrying every %gs",
                                config.name, why, STREAM_RETRY)
                self.stream = why
                await asyncio.sleep(STREAM_RETRY)
                continue
            self.stream = "ok"
            self.streams_made += 1
            self._flush_backlog()
            log.info("NATS stream %s keeps %s for %.0fs / %d bytes, %d replica(s)",
                     config.name, ", ".join(config.subjects or ()), s.nats_stream_max_age,
                     s.nats_stream_max_bytes, s.nats_stream_replicas)
            return

    async def _on_error(self, exc: Exception) -> None:
        self.last_error = f"{type(exc).__name__}: {exc}"[:200]
        log.debug("NATS bridge: %s", self.last_error)

    async def _on_disconnected(self) -> None:
        if self.state == "closed":
            return
        if self.state == "connected":
            self.disconnects += 1
            log.warning("NATS bridge lost %s; reconnecting (ZeroMQ clients are unaffected)",
                        self.connected_url)
        self.state = "reconnecting"

    async def _on_reconnected(self) -> None:
        self.reconnects += 1
        self.state = "connected"
        self.connected_url = _url_of(self._nc)
        log.info("NATS bridge reconnected to %s", self.connected_url)

    async def _on_closed(self) -> None:
        self.state = "closed"
        self._backlog = None

    # ------------------------------------------------------------------ events

    def _subject(self, topic: bytes) -> str | None:
        if topic in self._subjects:
            return self._subjects[topic]
        name = topic.decode()
        subject = None if name in natswire.NOT_MIRRORED else natswire.subject_of(self.hub, name)
        self._subjects[topic] = subject
        return subject

    async def _pump(self) -> None:
        """Publish what the fan-out published since the last turn, and queued replies.
        A bug here costs one batch (counted, logged), never the bridge: the tee's list
        would otherwise grow for the hub's life."""
        wake = self._wake_event
        while True:
            await wake.wait()
            wake.clear()
            replies, self._replies = self._replies, []
            batch = self._tee.take()
            try:
                await self._send(replies, batch)
            except Exception:
                self.unpublished += len(batch)
                log.exception("NATS bridge: a batch of %d messages was lost", len(batch))

    async def _send(self, replies: list[tuple[str, bytes]],
                    batch: list[tuple[bytes, bytes]]) -> None:
        nc = self._nc
        backlog = self._backlog
        if backlog is not None:  # not connected yet (or the stream is being made)
            room = BACKLOG_MAX - len(backlog)
            kept = [m for m in batch if self._subject(m[0]) is not None]
            backlog.extend(kept[:room])
            self.unpublished += max(0, len(kept) - room)
            return
        if nc is None or not (nc.is_connected or nc.is_reconnecting):
            self.unpublished += sum(1 for t, _ in batch if self._subject(t) is not None)
            if replies:
                log.warning("NATS bridge: %d request replies lost (not connected)",
                            len(replies))
            return
        for subject, payload in replies:
            try:
                await nc.publish(subject, payload)
            except Exception as exc:
                log.warning("NATS bridge: a reply to %s was lost: %s", subject, exc)
        fast = self._batch
        epoch = self.epoch
        for topic, payload in batch:
            target = self._subject(topic)
            if target is None:
                continue
            try:
                seq = _head(payload).seq
                if fast is None or not fast.add(target, payload, seq):
                    await nc.publish(target, payload, headers={
                        natswire.SEQ_HEADER: str(seq), natswire.EPOCH_HEADER: epoch})
            except Exception as exc:  # buffer full while reconnecting, closed
                self.unpublished += 1
                if self.unpublished & (self.unpublished - 1) == 0:  # 1, 2, 4, ...
                    log.warning("NATS bridge could not publish on %s: %s; %d unpublished "
                                "so far", target, exc, self.unpublished)
            else:
                self.published += 1
        if fast is not None:
            await fast.flush()

    # ------------------------------------------------------------------ requests

    async def _on_request(self, msg: Any) -> None:
        self.requests += 1
        user = natswire.topic_of(self.hub, msg.subject) or ""
        user = user[len(natswire.RPC_TOKEN) + 1:]
        if not msg.reply or not user:
            log.warning("NATS bridge: request on %s without a reply subject or user; "
                        "ignored", msg.subject)
            return
        peer = Peer(f"{NATS_PEER}{user}".encode(), f"{NATS_PEER}{user}")
        self.rpc.serve_payload(msg.data, peer, self._replier(msg.reply))

    def _replier(self, subject: str) -> Callable[[Reply], None]:
        def send(reply: Reply) -> None:
            self._replies.append((subject, encode(reply)))
            self._wake_event.set()

        return send


def _url_of(nc: Any) -> str:
    url = getattr(nc, "connected_url", None)
    return f"{url.scheme}://{url.hostname}:{url.port}" if url is not None else ""


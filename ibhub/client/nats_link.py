"""The SDK over NATS: ``AsyncHub(nats="nats://...", hub_name="paper")``.

A script far from the hub reaches it through a NATS cluster instead of ZeroMQ
(docs/scale-out.md). Two small classes stand in for the ZeroMQ ones with the same
methods, so ``AsyncHub``, the topic table (gap detection), the lease keeper
(heartbeats, re-hello) and the order tracker are the same code on either transport:

* :class:`NatsRpcChannel` (for ``rpc.RpcChannel``): each request is a NATS
  request on ``ibhub.<hub>.rpc.<user>`` (:mod:`ibhub.natswire`); the reply's id is
  checked like the DEALER's.
* :class:`NatsEventStream` (for ``stream.EventStream``): one core NATS subscription per
  topic the script listens to, on ``ibhub.<hub>.<topic>``; every message is the ZeroMQ
  payload, decoded and handed on as ``(topic, event)``. A NATS reconnect (a node of the
  cluster died; the client moved to another) is reported as the PUB socket's
  reconnect is: the topic table resynchronises every topic from its last value.

Gap recovery reads the last value from JetStream (:meth:`NatsLink.last_value`: the
stream's last message on the topic's subject, any replica answers) when the hub process
that welcomed the script wrote it (``Ibhub-Epoch`` = ``Welcome.nats_epoch``; a restarted
hub counts from 1 again), else, and when JetStream cannot answer, from the hub's
``snapshot`` request; :meth:`NatsLink.replay` and
:meth:`NatsLink.last_values` read the stream's window (a late consumer, a replay from
a time).

``nats-py`` is imported only here, and only when a script asks for NATS (the ``nats``
extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
import logging
from collections.abc import Callable
from typing import Any

import msgspec

from ibhub import natswire, wire
from ibhub.client.errors import HubError, HubTimeout
from ibhub.protocol import Error, Event, Reply, Request, Ticks
from ibhub.tasks import TaskSet

log = logging.getLogger(__name__)

REPLAY_IDLE = 1.0  # seconds without a message that end a replay early (stream exhausted)


class NatsLink:
    """One NATS connection of a script to hub ``hub`` as NATS user ``user``.

    ``servers``: one URL or a list (the cluster); ``options``: more ``nats.connect``
    keyword arguments (``password``, ``token``, ``user_credentials``, ``tls``, ...).
    ``user`` is this script's identity in request subjects and must be the user the
    server authenticates (its permissions enforce it; docs/scale-out.md). With an
    nkey seed and no user, the identity is the nkey's public key.
    """

    def __init__(self, servers: str | list[str], hub: str, user: str = "",
                 options: dict[str, Any] | None = None) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.hub = hub
        self.options = dict(options or {})
        if user:
            self.options.setdefault("user", user)
        self.user = user or _nkey_user(self.options) or "anonymous"
        self.nc: Any = None
        self.on_reconnect: Callable[[], None] | None = None
        self.reconnects = 0
        # Ibhub-Epoch of the newest live event: the hub process whose sequence numbers
        # the topic table follows ("" until the first event).
        self.epoch = ""

    @property
    def endpoint(self) -> str:
        return f"{','.join(self.servers)} hub {self.hub!r}"

    async def connect(self, timeout: float) -> None:
        """Connect within ``timeout`` seconds (then ``HubTimeout``); once connected,
        nats-py reconnects on its own, forever, to any of ``servers``."""
        try:
            import nats
        except ImportError:
            raise HubError("config", "AsyncHub(nats=...) needs the NATS client: "
                                     "pip install 'ibhub[nats]'") from None
        nc = nats.NATS()
        try:
            async with asyncio.timeout(timeout):
                await nc.connect(
                    servers=self.servers, name=f"ibhub-sdk-{self.user}",
                    connect_timeout=max(1, int(timeout)), allow_reconnect=True,
                    max_reconnect_attempts=-1, ping_interval=5,
                    max_outstanding_pings=2, inbox_prefix=f"_INBOX.{self.user}",
                    reconnected_cb=self._reconnected, disconnected_cb=self._disconnected,
                    error_cb=self._error, **{"reconnect_time_wait": 0.25, **self.options},
                )
        except Exception as exc:  # TimeoutError (nothing answered), auth, TLS
            with contextlib.suppress(Exception):
                await nc.close()
            why = "no server answered" if isinstance(exc, TimeoutError) else str(exc)
            raise HubTimeout(f"cannot connect to NATS at {self.endpoint} within "
                             f"{timeout:g}s: {why}") from None
        self.nc = nc

    async def close(self) -> None:
        nc, self.nc = self.nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("reconnected to NATS at %s", self.nc.connected_url.netloc if self.nc else "?")
        if self.on_reconnect is not None:
            try:
                self.on_reconnect()
            except Exception:
                log.exception("on_reconnect handler failed")

    async def _disconnected(self) -> None:
        log.info("lost the connection to NATS (%s); reconnecting", self.endpoint)

    async def _error(self, exc: Exception) -> None:
        log.debug("NATS: %s", exc)

    # ------------------------------------------------------------------ JetStream

    def _js(self) -> Any:
        if self.nc is None:
            raise HubError("closed", "the NATS link is closed: connect() first")
        return self.nc.jetstream(timeout=3)

    async def last_value(self, topic: str, epoch: str) -> Event | None:
        """The stream's last event on exactly ``topic`` (a batch's last tick), if the hub
        process of ``epoch`` (its Welcome's ``nats_epoch``) wrote it; None if it has none
        in its window, or only an older life's. Raises what JetStream raises (the caller
        falls back to the hub's snapshot)."""
        from nats.js.errors import NotFoundError

        js = self._js()
        try:
            msg = await js.get_last_msg(natswire.stream_name(self.hub),
                                        natswire.subject_of(self.hub, topic), direct=True)
        except NotFoundError:
            return None
        if not epoch or (msg.headers or {}).get(natswire.EPOCH_HEADER) != epoch:
            # Written by an earlier (or later) life of the hub: its sequence numbers
            # belong to another count; the hub's own snapshot is the recovery point.
            return None
        event = wire.decode_event(msg.data)
        return event.ticks[-1] if type(event) is Ticks else event

    async def last_values(self, topic: str = "tick.") -> dict[str, Event]:
        """The last event of every topic under ``topic`` (``tick.``: every instrument)
        still in the stream's window: what a consumer starting late needs first."""
        from nats.js.api import DeliverPolicy

        return {t: e.ticks[-1] if type(e) is Ticks else e
                for t, e in await self._read(topic, DeliverPolicy.LAST_PER_SUBJECT)}

    async def replay(self, topic: str, since: float) -> list[tuple[str, Event]]:
        """Every message on ``topic`` (or under it, ending in ``.``) from unix time
        ``since`` to now, in order, as (topic, event)."""
        from nats.js.api import DeliverPolicy

        start = dt.datetime.fromtimestamp(since, dt.UTC)
        return await self._read(topic, DeliverPolicy.BY_START_TIME, start)

    async def _read(self, topic: str, policy: Any, start: dt.datetime | None = None,
                    ) -> list[tuple[str, Event]]:
        """The stream's messages on ``topic`` by ``policy`` up to its last message now
        (its last sequence number when the read starts), through an ordered consumer."""
        from nats.js.api import ConsumerConfig

        js = self._js()
        stream = natswire.stream_name(self.hub)
        last = (await js.stream_info(stream)).state.last_seq
        out: list[tuple[str, Event]] = []
        if not last:
            return out
        sub = await js.subscribe(natswire.filter_of(self.hub, topic), stream=stream,
                                 ordered_consumer=True,
                                 config=ConsumerConfig(deliver_policy=policy,
                                                       opt_start_time=start))
        try:
            while True:
                try:
                    msg = await sub.next_msg(timeout=REPLAY_IDLE)
                except TimeoutError:
                    break  # nothing more on this filter up to ``last``
                name = natswire.topic_of(self.hub, msg.subject)
                if name is not None:
                    out.append((name, wire.decode_event(msg.data)))
                meta = msg.metadata
                if meta.sequence.stream >= last or meta.num_pending == 0:
                    break
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        return out


def _nkey_user(options: dict[str, Any]) -> str:
    seed = options.get("nkeys_seed_str") or ""
    path = options.get("nkeys_seed")
    if not seed and path:
        with open(path) as fh:
            seed = fh.read().strip()
    if not seed:
        return ""
    import nkeys

    return str(nkeys.from_seed(seed.encode()).public_key.decode())


class NatsRpcChannel:
    """``RpcChannel``'s interface over NATS request-reply (module doc)."""

    def __init__(self, link: NatsLink, *, timeout: float = 10.0,
                 on_unmatched: Callable[[Reply], None] | None = None) -> None:
        self.link = link
        self.timeout = timeout
        self.on_unmatched = on_unmatched
        self.endpoint = link.endpoint
        self.auth_failure: str | None = None
        self._ids = itertools.count(1)
        self._subject = natswire.rpc_subject(link.hub, link.user)

    def open(self) -> None:
        pass  # the link is connected by AsyncHub.connect

    async def close(self) -> None:
        pass  # the link is closed by AsyncHub.close

    async def request(self, request: Request, timeout: float | None = None) -> Reply:
        nc = self.link.nc
        if nc is None:
            raise HubError("closed", "the request channel is closed: connect() first")
        rid = next(self._ids)
        message = msgspec.structs.replace(request, id=rid)
        limit = self.timeout if timeout is None else timeout
        tag = type(request).__struct_config__.tag
        try:
            msg = await nc.request(self._subject, wire.encode(message), timeout=limit)
        except Exception as exc:  # timeout, no responders (hub not on NATS), closed
            raise HubTimeout(
                f"no reply to {tag!r} request #{rid} from hub {self.link.hub!r} over NATS "
                f"({type(exc).__name__}: {exc or 'is the hub started with --nats?'})"
            ) from None
        try:
            reply = wire.decode_reply(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise HubError("bad_reply", f"undecodable reply over NATS: {exc}") from None
        if reply.id != rid:  # never expected: one reply subject per request
            if self.on_unmatched is not None:
                self.on_unmatched(reply)
            raise HubError("bad_reply", f"reply #{reply.id} to request #{rid}")
        if isinstance(reply, Error):
            raise HubError(reply.code, reply.message, reply.ib_code)
        return reply


class NatsEventStream:
    """``EventStream``'s interface over core NATS subscriptions (module doc)."""

    def __init__(self, link: NatsLink, on_event: Callable[[str, Event], None],
                 on_reconnect: Callable[[], None]) -> None:
        self.link = link
        self.endpoint = link.endpoint
        self.on_event = on_event
        self.on_reconnect = on_reconnect
        self.connected = False
        self.received = 0
        self.undecodable = 0
        self._topics: dict[str, int] = {}
        self._subs: dict[str, Any] = {}
        self._ops: asyncio.Queue[tuple[bool, str]] = asyncio.Queue()
        self._tasks = TaskSet(log)

    def open(self) -> None:
        self.connected = True
        self.link.on_reconnect = self.on_reconnect
        self._tasks.spawn(self._apply(), name="ibhub-nats-subscriptions")

    async def close(self) -> None:
        await self._tasks.close()
        for sub in self._subs.values():
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        self.connected = False

    def subscribe(self, topic: str) -> None:
        count = self._topics.get(topic, 0)
        self._topics[topic] = count + 1
        if count == 0:
            self._ops.put_nowait((True, topic))

    def unsubscribe(self, topic: str) -> None:
        count = self._topics.get(topic, 0)
        if count <= 1:
            self._topics.pop(topic, None)
            if count == 1:
                self._ops.put_nowait((False, topic))
        else:
            self._topics[topic] = count - 1

    async def _apply(self) -> None:
        """Subscribe and unsubscribe in the order asked (one task: no reordering)."""
        while True:
            add, topic = await self._ops.get()
            nc = self.link.nc
            if nc is None:
                continue
            try:
                if add:
                    if topic not in self._subs:
                        self._subs[topic] = await nc.subscribe(
                            natswire.filter_of(self.link.hub, topic), cb=self._handle,
                            pending_msgs_limit=1_000_000, pending_bytes_limit=256 << 20)
                else:
                    sub = self._subs.pop(topic, None)
                    if sub is not None:
                        await sub.unsubscribe()
            except Exception as exc:
                log.warning("NATS %s %s failed: %s", "subscribe" if add else "unsubscribe",
                            topic, exc)

    async def _handle(self, msg: Any) -> None:
        topic = natswire.topic_of(self.link.hub, msg.subject)
        try:
            event = wire.decode_event(msg.data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self.undecodable += 1
            log.warning("ignoring an undecodable event on %s: %s", msg.subject, exc)
            return
        if topic is None:
            return
        headers = msg.headers
        if headers:
            self.link.epoch = headers.get(natswire.EPOCH_HEADER, self.link.epoch)
        self.received += len(event.ticks) if type(event) is Ticks else 1
        try:
            self.on_event(topic, event)
        except Exception:
            log.exception("handling an event on %s failed; the stream continues", topic)

"""``AsyncHub``: the asyncio core of the SDK.

One object owns the lease, one DEALER (requests) and one SUB (events) socket, on
the caller's event loop. Nothing here blocks the loop. What it does for a script:

* says hello with retries and a timeout, heartbeats at the interval the hub gave,
  says goodbye on close;
* when the hub answers ``unknown_lease`` (the lease expired, or the hub restarted)
  it says hello again and re-subscribes every topic, so subscriptions survive
  without the script doing anything;
* checks per-topic sequence numbers and recovers gaps from a snapshot
  (``sequencer.py``), and turns ``hub.status`` into connect/disconnect handlers
  (``upstream_watch.py``).

It imports only the protocol, the frame layout, pyzmq and msgspec: a script that
talks to the hub never pays for ``ib_insync``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import zmq.asyncio

from ibhub import wire
from ibhub.client.contracts import contract_spec, default_name
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.rpc import RpcChannel
from ibhub.client.stream import EventStream
from ibhub.client.subscription import Subscription
from ibhub.client.topics import TopicTable
from ibhub.client.upstream_watch import Handler, UpstreamWatch
from ibhub.protocol import (
    BarData,
    ClientIdLeased,
    ContractDetailsReply,
    ContractInfo,
    ContractSpec,
    ErrorCode,
    ErrorEvent,
    Event,
    GetContractDetails,
    GetHistoricalBars,
    GetSnapshot,
    GetStatus,
    Goodbye,
    Heartbeat,
    Hello,
    HistoricalBarsReply,
    LeaseClientId,
    ReleaseClientId,
    Reply,
    Request,
    Snapshot,
    StatusReply,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Welcome,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)
# Refusals that retrying cannot fix: a subscription meeting one after a re-hello ends.
_PERMANENT = frozenset({
    ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_CONTRACT, ErrorCode.AMBIGUOUS_CONTRACT,
    ErrorCode.FORBIDDEN,
})


class AsyncHub:
    """The SDK's asyncio client. ``async with AsyncHub() as hub: ...``

    Endpoints: the arguments, else ``$IBHUB_PUB`` / ``$IBHUB_RPC``, else the wire
    defaults. ``connect_retries`` hellos of ``connect_timeout`` seconds each are tried
    before ``connect()`` gives up with ``HubTimeout``.
    """

    def __init__(
        self,
        pub: str | None = None,
        rpc: str | None = None,
        *,
        name: str | None = None,
        role: str = "trader",
        connect_timeout: float = 3.0,
        connect_retries: int = 3,
        request_timeout: float = 10.0,
        queue_size: int = 10_000,
    ) -> None:
        self.pub_endpoint = wire.pub_endpoint(pub)
        self.rpc_endpoint = wire.rpc_endpoint(rpc)
        self.name = name or default_name()
        self.role = role
        self.connect_timeout = connect_timeout
        self.connect_retries = max(1, connect_retries)
        self.request_timeout = request_timeout
        self.queue_size = queue_size
        self.lease: str | None = None
        self.client_id: int | None = None
        self.heartbeat_interval = 1.0
        self.hub_version = ""
        self.hub_reachable = False
        self.rehellos = 0
        self.upstream = UpstreamWatch(self._spawn)
        self._error_handlers: list[Callable[[ErrorEvent], Any]] = []
        self._table: TopicTable | None = None
        self._context: zmq.asyncio.Context | None = None
        self._rpc: RpcChannel | None = None
        self._stream: EventStream | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._renew_lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> AsyncHub:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the sockets, get a lease and start heartbeating."""
        if self.lease is not None:
            return
        self._context = zmq.asyncio.Context()
        self._rpc = RpcChannel(
            self._context, self.rpc_endpoint, timeout=self.request_timeout,
            on_unmatched=self._on_unmatched,
        )
        self._stream = EventStream(
            self._context, self.pub_endpoint, self._on_event, self._on_pub_reconnect
        )
        self._wake = asyncio.Event()
        self._renew_lock = asyncio.Lock()
        try:
            self._rpc.open()
            self._stream.open()
            self._table = TopicTable(
                self._stream, self._last_value, self._spawn, self.upstream.on_event,
                self._on_error_event,
            )
            self._adopt(await self._hello_with_retries())
            status = await self._rpc.request(GetStatus(id=0))
            if isinstance(status, StatusReply):
                self.upstream.on_status_reply(status)
        except BaseException:
            await self._teardown()
            raise
        self._heartbeat = asyncio.get_running_loop().create_task(
            self._heartbeat_loop(), name=f"ibhub-heartbeat {self.name}"
        )
        log.info(
            "connected to the hub at %s as %s: lease %s, client id %s, upstream %s",
            self.rpc_endpoint, self.name, self.lease, self.client_id, self.upstream.state,
        )

    async def close(self) -> None:
        """Say goodbye (best effort), end every subscription and close the sockets."""
        if self._rpc is None:
            return
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        lease, self.lease = self.lease, None
        if lease is not None:
            try:
                await self._rpc.request(
                    Goodbye(id=0, lease=lease), timeout=min(1.0, self.request_timeout)
                )
            except HubError as exc:
                log.debug("goodbye for lease %s not acknowledged: %s", lease, exc)
        await self._teardown()

    async def _teardown(self) -> None:
        self.lease = None
        if self._table is not None:
            self._table.end_all()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._stream is not None:
            await self._stream.close()
            self._stream = None
        if self._rpc is not None:
            await self._rpc.close()
            self._rpc = None
        if self._context is not None:
            self._context.term()
            self._context = None
        self.hub_reachable = False

    # ------------------------------------------------------------------ state

    def is_connected(self) -> bool:
        """True when the SDK holds a live lease, the hub answers, and its upstream is up."""
        return self.lease is not None and self.hub_reachable and bool(self.upstream.up)

    @property
    def upstream_state(self) -> str:
        return self.upstream.state

    @property
    def stats(self) -> dict[str, int]:
        """Counters: events received, gaps recovered, stale events dropped, re-hellos."""
        seqs = self._table.sequencers() if self._table is not None else []
        entries = self._table.entries.values() if self._table is not None else ()
        return {
            "events": self._stream.received if self._stream else 0,
            "undecodable": self._stream.undecodable if self._stream else 0,
            "gaps": sum(s.gaps for s in seqs),
            "stale": sum(s.stale for s in seqs),
            "rehellos": self.rehellos,
            "disconnects": self.upstream.disconnects,
            "connects": self.upstream.connects,
            "subscriptions": sum(len(entry.subs) for entry in entries),
        }

    async def wait_connected(self, timeout: float | None = None) -> bool:
        """Wait until the hub's upstream is connected; False if ``timeout`` passes first."""
        if self.lease is None:
            raise NotConnected()
        return await self.upstream.wait_up(timeout)

    def add_disconnect_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` once each time the upstream goes down (may be async)."""
        self.upstream.disconnect_handlers.append(fn)

    def add_connect_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` once each time the upstream comes back (may be async)."""
        self.upstream.connect_handlers.append(fn)

    def add_status_handler(self, fn: Handler) -> None:
        """``fn(status: HubStatus)`` for every ``hub.status`` event."""
        self.upstream.status_handlers.append(fn)

    def add_error_handler(self, fn: Callable[[ErrorEvent], Any]) -> None:
        """``fn(error: ErrorEvent)`` for IB errors the hub routes to this lease."""
        self._error_handlers.append(fn)

    # ------------------------------------------------------------------ requests

    async def status(self) -> StatusReply:
        return self._expect(await self._channel().request(GetStatus(id=0)), StatusReply)

    async def subscribe(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Event], Any] | None = None,
        queue_size: int | None = None,
        **fields: Any,
    ) -> Subscription:
        """Stream ticks (``kind="ticks"``) or 5-second bars (``"bars"``) for a contract.

        Events go to ``callback`` if given (on this loop), else to the returned
        subscription's queue (``async for tick in sub``). The topic's last value, if
        the hub has one, is the first event (a late joiner starts from the snapshot).
        """
        spec = contract_spec(contract, **fields)
        def build(lease: str) -> Subscribe:
            return Subscribe(id=0, lease=lease, contract=spec, kind=kind)

        reply = self._expect(await self._upstream_call(lambda: self._leased(build)), Subscribed)
        sub = Subscription(
            self, reply.topic, reply.contract, spec, kind, callback,
            self.queue_size if queue_size is None else queue_size,
        )
        table = self._topic_table()
        entry = table.get(reply.topic)
        if entry is None:
            entry = table.add(reply.topic, spec, kind)
            entry.subs.append(sub)
            entry.sequencer.sync()
        else:
            entry.subs.append(sub)
            if entry.latest is not None:
                sub._deliver(entry.latest)
        return sub

    async def unsubscribe(self, sub: Subscription) -> None:
        """End ``sub``; the last local subscription on a topic unsubscribes at the hub."""
        if sub.closed:
            return
        sub._end()
        entry = self._table.get(sub.topic) if self._table is not None else None
        if entry is None or sub not in entry.subs:
            return
        entry.subs.remove(sub)
        if entry.subs:
            return
        self._topic_table().remove(entry)
        lease = self.lease
        if lease is None or self._rpc is None:
            return
        try:
            await self._rpc.request(Unsubscribe(id=0, lease=lease, topic=sub.topic))
        except HubError as exc:
            benign = exc.code in (ErrorCode.UNKNOWN_LEASE, ErrorCode.NOT_SUBSCRIBED)
            level = logging.DEBUG if benign else logging.WARNING
            log.log(level, "unsubscribe %s: %s", sub.topic, exc)

    async def _last_value(self, topic: str) -> Event | None:
        """The hub's last event on exactly ``topic`` (None if it has none yet)."""
        reply = self._expect(
            await self._channel().request(GetSnapshot(id=0, topic=topic)), Snapshot
        )
        for name, raw in zip(reply.topics, reply.events, strict=False):
            if name == topic:
                return wire.decode_event(raw)
        return None

    async def snapshot(self, topic: str) -> dict[str, Event]:
        """The last event of ``topic`` (or of every topic starting with it)."""
        reply = await self._channel().request(GetSnapshot(id=0, topic=topic))
        snap = self._expect(reply, Snapshot)
        return {
            name: wire.decode_event(raw)
            for name, raw in zip(snap.topics, snap.events, strict=False)
        }

    async def contract_details(
        self, contract: str | int | ContractSpec, **fields: Any
    ) -> list[ContractInfo]:
        spec = contract_spec(contract, **fields)
        reply = await self._upstream_call(
            lambda: self._channel().request(GetContractDetails(id=0, contract=spec))
        )
        return self._expect(reply, ContractDetailsReply).contracts

    async def historical_bars(
        self,
        contract: str | int | ContractSpec,
        *,
        duration: str = "1 D",
        bar_size: str = "1 hour",
        what_to_show: str = "TRADES",
        use_rth: bool = True,
        end: str = "",
        timeout: float | None = None,
        **fields: Any,
    ) -> list[BarData]:
        """Historical bars (IB duration and bar-size strings, e.g. "5 D", "1 hour")."""
        request = GetHistoricalBars(
            id=0, contract=contract_spec(contract, **fields), duration=duration,
            bar_size=bar_size, what_to_show=what_to_show, use_rth=use_rth, end=end,
        )
        reply = await self._upstream_call(lambda: self._channel().request(request, timeout))
        return self._expect(reply, HistoricalBarsReply).bars

    async def lease_client_id(
        self, name: str | None = None, ttl: float = 0.0, *, tied: bool = False
    ) -> int:
        """A raw TWS client id for a direct Gateway connection; free it with
        ``release_client_id``. ``tied=True`` releases it when this lease ends;
        ``ttl`` > 0 releases it after that many seconds."""
        request = LeaseClientId(
            id=0, name=name or self.name, ttl=ttl, lease=(self.lease or "") if tied else ""
        )
        return self._expect(await self._channel().request(request), ClientIdLeased).client_id

    async def release_client_id(self, client_id: int) -> None:
        await self._channel().request(ReleaseClientId(id=0, client_id=client_id))

    # ------------------------------------------------------------------ internals

    async def _upstream_call(self, send: Callable[[], Awaitable[Reply]]) -> Reply:
        """Send a request that needs the Gateway; while the hub answers
        ``upstream_down`` (e.g. it is still connecting), wait for the upstream to come
        up and try again, for at most ``request_timeout`` seconds in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.request_timeout
        while True:
            try:
                return await send()
            except HubError as exc:
                if exc.code != ErrorCode.UPSTREAM_DOWN:
                    raise
                left = deadline - loop.time()
                if left <= 0:
                    raise
                if self.upstream.up:  # our view lags the hub's: do not spin
                    await asyncio.sleep(min(0.1, left))
                elif not await self.upstream.wait_up(left):
                    raise
                log.debug("retrying a request now that the upstream is up: %s", exc)

    def _channel(self) -> RpcChannel:
        if self._rpc is None:
            raise NotConnected()
        return self._rpc

    def _topic_table(self) -> TopicTable:
        if self._table is None:
            raise NotConnected()
        return self._table

    @staticmethod
    def _expect(reply: Reply, kind: type[R]) -> R:
        if not isinstance(reply, kind):
            raise HubError(
                ErrorCode.INTERNAL,
                f"expected a {kind.__name__} reply, got {type(reply).__name__}",
            )
        return reply

    async def _hello_with_retries(self) -> Welcome:
        rpc = self._channel()
        last: HubTimeout | None = None
        for attempt in range(1, self.connect_retries + 1):
            try:
                reply = await rpc.request(
                    Hello(id=0, name=self.name, role=self.role), self.connect_timeout
                )
                return self._expect(reply, Welcome)
            except HubTimeout as exc:
                last = exc
                log.info(
                    "hello attempt %d/%d to %s timed out", attempt, self.connect_retries,
                    self.rpc_endpoint,
                )
        raise HubTimeout(
            f"no hub answered at {self.rpc_endpoint} after {self.connect_retries} attempt(s) of "
            f"{self.connect_timeout:.1f}s: start it with `ibhub run`, or point IBHUB_RPC / "
            f"rpc= at it"
        ) from last

    def _adopt(self, welcome: Welcome) -> None:
        old = self.lease
        self.lease = welcome.lease
        self.client_id = welcome.client_id
        interval = welcome.heartbeat_interval
        self.heartbeat_interval = interval if interval > 0 else 1.0
        self.hub_version = welcome.hub_version
        self.hub_reachable = True
        if old != welcome.lease and self._table is not None:
            self._table.set_lease(welcome.lease)

    async def _leased(self, build: Callable[[str], Request]) -> Reply:
        """Send a request that needs the lease; renew the lease once if it is unknown."""
        lease = self.lease
        if lease is None:
            raise NotConnected()
        try:
            return await self._channel().request(build(lease))
        except HubError as exc:
            if exc.code != ErrorCode.UNKNOWN_LEASE:
                raise
        await self._renew(lease)
        if self.lease is None:
            raise NotConnected()
        return await self._channel().request(build(self.lease))

    async def _renew(self, stale: str) -> None:
        """Hello again and resubscribe everything (the hub forgot lease ``stale``)."""
        assert self._renew_lock is not None
        async with self._renew_lock:
            if self.lease != stale or self._rpc is None:
                return  # someone else renewed it already (or we closed)
            welcome = self._expect(
                await self._rpc.request(Hello(id=0, name=self.name, role=self.role)), Welcome
            )
            self._adopt(welcome)
            self.rehellos += 1
            log.warning(
                "the hub no longer knew lease %s (expired, or the hub restarted): now lease %s, "
                "client id %s; resubscribing %d topic(s)",
                stale, welcome.lease, welcome.client_id, len(self._topic_table().entries),
            )
            for entry in self._topic_table().entries.values():
                entry.pending = True
            await self._resubscribe_pending()
            with contextlib.suppress(HubError):
                status = await self._rpc.request(GetStatus(id=0))
                if isinstance(status, StatusReply):
                    self.upstream.on_status_reply(status)

    async def _resubscribe_pending(self) -> None:
        """Subscribe again every topic the hub does not hold for our current lease.

        A refusal that can pass (the Gateway is down behind a restarted hub, a line
        limit, a timeout) leaves the topic pending: it is retried after each good
        heartbeat. One that cannot (the contract no longer resolves) ends the
        topic's subscriptions with that error in ``Subscription.error``.
        """
        table = self._topic_table()
        for entry in [e for e in table.entries.values() if e.pending]:
            lease = self.lease
            if lease is None or self._rpc is None:
                return
            request = Subscribe(id=0, lease=lease, contract=entry.spec, kind=entry.kind)
            try:
                reply = self._expect(await self._rpc.request(request), Subscribed)
            except HubError as exc:
                if exc.code == ErrorCode.UNKNOWN_LEASE:
                    return  # the next heartbeat renews the lease and comes back here
                if exc.code in _PERMANENT:
                    table.drop(entry, exc)
                    continue
                if not entry.warned:
                    log.warning("could not resubscribe %s yet (%s); retrying after each "
                                "heartbeat", entry.topic, exc)
                    entry.warned = True
                continue
            entry.pending = entry.warned = False
            if table.get(entry.topic) is not entry:
                continue  # closed while the request was in flight
            if reply.topic != entry.topic:
                entry = table.rename(entry, reply.topic)
            entry.sequencer.sync()
            log.info("resubscribed %s", reply.topic)

    async def _retry_pending(self) -> None:
        assert self._renew_lock is not None
        if self._renew_lock.locked():
            return
        async with self._renew_lock:
            await self._resubscribe_pending()

    def _gaps_of(self, topic: str) -> int:
        return self._table.gaps_of(topic) if self._table is not None else 0

    def _on_event(self, topic: str, event: Event) -> None:
        if self._table is not None:
            self._table.on_event(topic, event)

    def _on_error_event(self, event: ErrorEvent) -> None:
        log.warning("IB error %d for this lease: %s", event.ib_code, event.message)
        for fn in list(self._error_handlers):
            try:
                result = fn(event)
                if asyncio.iscoroutine(result):
                    self._spawn(result, "error handler")
            except Exception:
                log.exception("error handler %r raised; continuing", fn)

    def _on_pub_reconnect(self) -> None:
        """New PUB connection: sequence numbers restart from what the hub has now."""
        if self._table is not None:
            self._table.resync_all()
        if self._wake is not None:
            self._wake.set()  # heartbeat now: a restarted hub has forgotten our lease

    def _on_unmatched(self, reply: Reply) -> None:
        # A Welcome for a hello that timed out: that lease would sit idle until it
        # expires, holding a client id; hand it back now.
        if isinstance(reply, Welcome) and reply.lease != self.lease and self._rpc is not None:
            self._spawn(self._goodbye(reply.lease), f"goodbye {reply.lease}")

    async def _goodbye(self, lease: str) -> None:
        with contextlib.suppress(HubError):
            await self._channel().request(Goodbye(id=0, lease=lease), timeout=1.0)

    async def _heartbeat_loop(self) -> None:
        """Heartbeat every ``heartbeat_interval`` (sooner when woken), a slow answer
        does not stretch the cadence."""
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        next_at = loop.time() + self.heartbeat_interval
        while True:
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
            self._wake.clear()
            next_at = loop.time() + self.heartbeat_interval
            await self._beat()

    async def _beat(self) -> None:
        lease = self.lease
        if lease is None or self._rpc is None:
            return
        try:
            await self._rpc.request(
                Heartbeat(id=0, lease=lease), timeout=max(self.heartbeat_interval, 0.5)
            )
        except HubTimeout:
            if self.hub_reachable:
                log.warning("the hub at %s did not answer a heartbeat", self.rpc_endpoint)
            self.hub_reachable = False
            return
        except HubError as exc:
            if exc.code != ErrorCode.UNKNOWN_LEASE:
                log.warning("heartbeat refused: %s", exc)
                return
            try:
                await self._renew(lease)
            except HubError as renew_exc:
                log.warning("re-hello failed, retrying at the next heartbeat: %s", renew_exc)
                return
        if not self.hub_reachable:
            log.info("the hub at %s answers again", self.rpc_endpoint)
        self.hub_reachable = True
        if self._table is not None and any(e.pending for e in self._table.entries.values()):
            self._spawn(self._retry_pending(), "resubscribe")

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"ibhub {what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

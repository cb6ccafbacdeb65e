"""The lease: hello with retries, heartbeats, re-hello and resubscribe, goodbye.

A ``LeaseKeeper`` is the only code that knows the SDK's lease: its public handle
(``lease``: topics, logs) and its secret ``token`` (the ``lease`` field of every
request; docs/security.md). When the hub says
``unknown_lease`` (the lease expired because the script stalled, or the hub
restarted and lost its table), it says hello again and subscribes every topic of
the ``TopicTable`` again, under the same topics, so the script's subscriptions keep
flowing. A topic the hub cannot serve yet (its Gateway is still down) stays
*pending* and is retried after each good heartbeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.rpc import RpcChannel
from ibhub.client.topics import TopicTable
from ibhub.protocol import (
    PROTOCOL_VERSION,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    Reply,
    Request,
    Subscribe,
    Subscribed,
    Welcome,
)

log = logging.getLogger(__name__)

R = TypeVar("R", bound=Reply)

# Refusals that retrying cannot fix: a subscription meeting one after a re-hello ends.
PERMANENT = frozenset({
    ErrorCode.BAD_REQUEST, ErrorCode.UNKNOWN_CONTRACT, ErrorCode.AMBIGUOUS_CONTRACT,
    ErrorCode.FORBIDDEN,
})


def expect(reply: Reply, kind: type[R]) -> R:
    """``reply`` as a ``kind``; a hub answering with another type is a protocol bug."""
    if not isinstance(reply, kind):
        raise HubError(
            ErrorCode.INTERNAL, f"expected a {kind.__name__} reply, got {type(reply).__name__}"
        )
    return reply


def _ignore_welcome(welcome: Welcome) -> None:
    """The default ``LeaseKeeper.on_welcome``: nobody else needs the Welcome."""


class LeaseKeeper:
    """Holds one lease at the hub for as long as the SDK is connected."""

    def __init__(
        self,
        rpc: RpcChannel,
        table: TopicTable,
        spawn: Callable[[Coroutine[Any, Any, Any], str], None],
        *,
        name: str,
        role: str,
        credential: str = "",
        name_secret: str = "",
    ) -> None:
        self.name = name
        self.role = role
        self._credential = credential  # the operator token, for role="operator"
        self._name_secret = name_secret  # proves the script name (docs/security.md)
        self.lease: str | None = None  # the public handle
        self.token: str | None = None  # the secret the requests carry
        self.client_id: int | None = None
        self.heartbeat_interval = 1.0
        self.hub_version = ""
        self.tick_bundle = False  # the hub publishes bundle.tick (Welcome)
        self.nats_epoch = ""  # the hub's NATS epoch (Welcome): the stream's valid values
        self.hub_reachable = False
        self.rehellos = 0  # completed renewals (hello again + resubscribe pass)
        self._rpc = rpc
        self._table = table
        self._spawn = spawn
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one re-hello / resubscribe pass at a time
        self._heartbeat: asyncio.Task[None] | None = None
        rpc.on_unmatched = self._on_unmatched
        # What each heartbeat tells the hub about keeping up (gaps, lag_ms); set by
        # AsyncHub, read once a heartbeat (nothing per event).
        self.report: Callable[[], dict[str, Any]] = dict
        # Told every Welcome (the first hello and each re-hello): the lane attaches to
        # the lease it names (client/lane.py).
        self.on_welcome: Callable[[Welcome], None] = _ignore_welcome

    # ------------------------------------------------------------------ life

    async def hello(self, timeout: float, attempts: int) -> None:
        """Say hello, up to ``attempts`` times of ``timeout`` seconds, and start beating."""
        last: HubTimeout | None = None
        for attempt in range(1, attempts + 1):
            try:
                reply = await self._rpc.request(self._hello(), timeout)
            except HubTimeout as exc:
                last = exc
                log.info("hello attempt %d/%d to %s timed out", attempt, attempts,
                         self._rpc.endpoint)
                continue
            self._adopt(expect(reply, Welcome))
            self._heartbeat = asyncio.get_running_loop().create_task(
                self._heartbeat_loop(), name=f"ibhub-heartbeat {self.name}"
            )
            return
        hint = getattr(self._rpc, "auth_failure", None) \
            or "start it with `ibhub run`, or point IBHUB_RPC / rpc= at it"
        raise HubTimeout(
            f"no hub answered at {self._rpc.endpoint} after {attempts} attempt(s) of "
            f"{timeout:.1f}s: {hint}"
        ) from last

    async def goodbye(self, timeout: float) -> None:
        """Stop heartbeating and end the lease at the hub (best effort)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
        lease, self.lease = self.lease, None
        token, self.token = self.token, None
        self.hub_reachable = False
        if token is not None:
            try:
                await self._rpc.request(Goodbye(id=0, lease=token), timeout=timeout)
            except HubError as exc:
                log.debug("goodbye for lease %s not acknowledged: %s", lease, exc)

    def wake(self) -> None:
        """Heartbeat now (e.g. the PUB connection was re-established: hub restart?)."""
        self._wake.set()

    # ------------------------------------------------------------------ requests

    async def request(self, build: Callable[[str], Request]) -> Reply:
        """Send a request that names the lease; renew the lease once if it is unknown."""
        lease, token = self.lease, self.token
        if lease is None or token is None:
            raise NotConnected()
        try:
            return await self._rpc.request(build(token))
        except HubError as exc:
            if exc.code != ErrorCode.UNKNOWN_LEASE:
                raise
        await self.renew(lease)
        if self.token is None:
            raise NotConnected()
        return await self._rpc.request(build(self.token))

    async def renew(self, stale: str) -> None:
        """Hello again and resubscribe everything (the hub forgot lease ``stale``)."""
        async with self._lock:
            if self.lease != stale:
                return  # renewed already by a concurrent caller (or closed)
            welcome = expect(await self._rpc.request(self._hello()), Welcome)
            self._adopt(welcome)
            log.warning(
                "the hub no longer knew lease %s (expired, or the hub restarted): now lease %s, "
                "client id %s; resubscribing %d topic(s)",
                stale, welcome.lease, welcome.client_id, len(self._table.entries),
            )
            for entry in self._table.entries.values():
                entry.pending = True
            await self._resubscribe_pending()
            self.rehellos += 1  # counted once the resubscribe pass is done
            self._table.status.sync()  # a restarted hub: take its upstream state

    # ------------------------------------------------------------------ internals

    def _hello(self) -> Hello:
        return Hello(id=0, name=self.name, role=self.role, protocol=PROTOCOL_VERSION,
                     credential=self._credential, name_secret=self._name_secret)

    def _adopt(self, welcome: Welcome) -> None:
        self.lease = welcome.lease
        self.token = welcome.token or welcome.lease  # a hub before tokens: the id itself
        self.client_id = welcome.client_id
        interval = welcome.heartbeat_interval
        self.heartbeat_interval = interval if interval > 0 else 1.0
        self.hub_version = welcome.hub_version
        if self.nats_epoch and welcome.nats_epoch != self.nats_epoch:
            # Over NATS a restarted hub is seen here (no PUB socket reconnects): its
            # sequence numbers start again, so every topic starts again from its value.
            self._table.resync_all()
        self.nats_epoch = welcome.nats_epoch
        self.tick_bundle = welcome.tick_bundle
        if welcome.name_secret and not self._name_secret:  # the hub made one: keep it
            self._name_secret = welcome.name_secret
        self.hub_reachable = True
        self._table.set_lease(welcome.lease)
        self.on_welcome(welcome)

    async def _resubscribe_pending(self) -> None:
        """Subscribe again every topic the hub does not hold for the current lease.

        A refusal that can pass (the Gateway is down behind a restarted hub, a line
        limit, a timeout) leaves the topic pending, retried after each good heartbeat;
        one that cannot (the contract no longer resolves) ends the topic's
        subscriptions with that error in ``Subscription.error``.
        """
        table = self._table
        for entry in [e for e in table.entries.values() if e.pending]:
            token = self.token
            if token is None:
                return
            request = Subscribe(id=0, lease=token, contract=entry.spec, kind=entry.kind)
            try:
                reply = expect(await self._rpc.request(request), Subscribed)
            except HubError as exc:
                if exc.code == ErrorCode.UNKNOWN_LEASE:
                    return  # the next heartbeat renews the lease and comes back here
                if exc.code in PERMANENT:
                    table.drop(entry, exc)
                elif not entry.warned:
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
        if self._lock.locked():
            return
        async with self._lock:
            await self._resubscribe_pending()

    def _on_unmatched(self, reply: Reply) -> None:
        # A Welcome for a hello that timed out: that lease would sit idle until it
        # expires, holding a client id; hand it back now.
        if isinstance(reply, Welcome) and reply.lease != self.lease:
            self._spawn(self._goodbye_orphan(reply.token or reply.lease),
                        f"goodbye {reply.lease}")

    async def _goodbye_orphan(self, token: str) -> None:
        with contextlib.suppress(HubError):
            await self._rpc.request(Goodbye(id=0, lease=token), timeout=1.0)

    async def _heartbeat_loop(self) -> None:
        """Heartbeat every ``heartbeat_interval`` (sooner when woken); a slow answer
        does not stretch the cadence."""
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
        lease, token = self.lease, self.token
        if lease is None or token is None:
            return
        try:
            await self._rpc.request(
                Heartbeat(id=0, lease=token, **self.report()),
                timeout=max(self.heartbeat_interval, 0.5)
            )
        except HubTimeout:
            if self.hub_reachable:
                log.warning("the hub at %s did not answer a heartbeat", self._rpc.endpoint)
            self.hub_reachable = False
            return
        except HubError as exc:
            if exc.code != ErrorCode.UNKNOWN_LEASE:
                log.warning("heartbeat refused: %s", exc)
                return
            try:
                await self.renew(lease)
            except HubError as renew_exc:
                log.warning("re-hello failed, retrying at the next heartbeat: %s", renew_exc)
                return
        if not self.hub_reachable:
            log.info("the hub at %s answers again", self._rpc.endpoint)
        self.hub_reachable = True
        if any(entry.pending for entry in self._table.entries.values()):
            self._spawn(self._retry_pending(), "resubscribe")

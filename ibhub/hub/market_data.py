"""The market-data service: contracts resolved with a cache, lines opened and closed.

One instance per hub, used by the request handlers (``MarketRequests.subscribe``,
``unsubscribe``, ``contract_details``, ``historical_bars``) and by the TWS front
door (``ibhub.frontdoor.market``): however many scripts of either kind watch an
instrument, the Gateway sees one line, opened when its first holder comes and
cancelled when its last holder goes.

Contracts: ``resolve`` asks the upstream session for the contract details of a
spec once (concurrent askers share the one request) and caches a non-empty answer
(at most ``RESOLVE_CACHE_MAX`` specs; the cache is cleared when full).

The composition root (:mod:`ibhub.hub.server`) creates the service with the
subscription registry and hands it the fan-out, the pacer and the upstream session
once they exist (``attach``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from ibhub.config import HubSettings
from ibhub.hub.fanout import Fanout
from ibhub.hub.subscriptions import Subscription, SubscriptionRegistry, is_tick_kind
from ibhub.ib.queries import UpstreamDown, UpstreamRequestError
from ibhub.ib.session import Upstream
from ibhub.protocol import TOPIC_DEPTH, ContractInfo, ContractSpec, Error, ErrorCode
from ibhub.tws.pacing import Pacer, PacerBusy, Priority

log = logging.getLogger(__name__)

RESOLVE_CACHE_MAX = 10_000


class MarketDataService:
    """Contract resolution (cached) and the shared, ref-counted market-data lines."""

    def __init__(self, settings: HubSettings, subs: SubscriptionRegistry,
                 depth: SubscriptionRegistry | None = None) -> None:
        self.settings = settings
        self.subs = subs
        # Depth books have IB's budget of their own (depth_max, 3 by default): hub/depth.py
        self.depth = depth if depth is not None else SubscriptionRegistry(
            settings.depth_max, budget="market-depth", setting="depth_max")
        self.upstream: Upstream | None = None
        self.fanout: Fanout | None = None
        self.pacer: Pacer | None = None
        self._resolved: dict[ContractSpec, list[ContractInfo]] = {}
        # Contracts by conId, from every lookup and from the Gateway's contractDetails
        # replies the front door passes through (frontdoor/learned.py): a spec that
        # names a known conId needs no upstream request (first-tick latency).
        self._by_con_id: dict[int, ContractInfo] = {}
        self._resolving: dict[ContractSpec, asyncio.Future[list[ContractInfo]]] = {}

    def attach(self, upstream: Upstream, fanout: Fanout, pacer: Pacer | None) -> None:
        """The parts built by the hub's start(): lines go there."""
        self.upstream = upstream
        self.fanout = fanout
        self.pacer = pacer

    def stop(self) -> None:
        """Cancel the contract lookups still in flight (the hub is stopping)."""
        for fut in self._resolving.values():
            fut.cancel()

    # ------------------------------------------------------------------ lines

    def open_line(
        self, holder: str, info: ContractInfo, kind: str, *, pace: bool
    ) -> tuple[Subscription, bool]:
        """``holder`` joins the line for ``(info, kind)``; the first holder opens it
        upstream. Returns the subscription and whether it was created.

        Raises ``LineLimit`` when a new line would exceed ``lines_max``, and with
        ``pace`` ``PacerBusy`` when the upstream queue has no room for its request.
        """
        assert self.fanout is not None and self.upstream is not None
        if kind == f"bars.{default_bars(info)}":
            kind = "bars"  # the same bars as the plain kind: share that line
        registry = self.registry(kind)
        existing = registry.get(info.con_id, kind)
        if existing is None:
            registry.check_line_available(info.con_id, kind)
            if pace and self.pacer is not None:  # a new line queues a request upstream
                self.pacer.check(Priority.SUBSCRIPTION)
            topic = self.fanout.topic_for(info, kind)
            stream: Any
            if is_tick_kind(kind):
                stream = self.fanout.tick_stream(topic, info)
            elif kind == "depth":
                stream = self.fanout.depth_stream(topic, info, self.settings.depth_rows)
            elif kind.startswith("tbt."):
                stream = self.fanout.tbt_stream(topic, info, kind)
            elif kind.startswith("hist."):
                stream = self.fanout.hist_stream(topic, info)
            else:
                stream = self.fanout.bar_stream(topic, info)
        else:
            topic, stream = existing.topic, existing.stream
        sub, created = registry.add(holder, info, kind, topic, stream)
        if created:
            self.upstream.open_line(sub)
        return sub, created

    def registry(self, kind: str) -> SubscriptionRegistry:
        """The registry (and so the budget) lines of ``kind`` count against."""
        return self.depth if kind == "depth" else self.subs

    def release(self, holder: str, topic: str) -> tuple[Subscription, bool]:
        """``holder`` lets go of ``topic``; the line is cancelled upstream when it was
        the last holder. Returns the subscription and whether it is now empty.
        Raises ``NotSubscribed`` if ``holder`` does not hold ``topic``."""
        registry = self.depth if topic.startswith(TOPIC_DEPTH) else self.subs
        sub, empty = registry.remove(holder, topic)
        if empty:
            self.close_line(sub)
        return sub, empty

    def release_holder(self, holder: str) -> None:
        """Everything ``holder`` held (an ended lease)."""
        for sub in [*self.subs.release_lease(holder), *self.depth.release_lease(holder)]:
            self.close_line(sub)

    def close_line(self, sub: Subscription) -> None:
        """Cancel an emptied line upstream and forget its last values."""
        if self.upstream is not None:
            self.upstream.close_line(sub)
        if self.fanout is not None:
            self.fanout.forget_last(sub.topic)
        log.info("cancelled %s (no subscribers left)", sub.topic)

    # ------------------------------------------------------------------ contracts

    async def resolve(self, rid: int, spec: ContractSpec) -> list[ContractInfo] | Error:
        """Contracts matching ``spec`` (cached), or an Error reply."""
        cached = self._resolved.get(spec)
        if cached is not None:
            return cached
        fut = self._resolving.get(spec)
        if fut is None:
            assert self.upstream is not None
            fut = asyncio.ensure_future(self.upstream.contract_details(spec))
            self._resolving[spec] = fut
            fut.add_done_callback(lambda f: self._resolved_done(spec, f))
        try:
            found = await asyncio.shield(fut)
        except UpstreamDown as exc:
            return Error(id=rid, code=ErrorCode.UPSTREAM_DOWN, message=str(exc))
        except PacerBusy as exc:
            return Error(id=rid, code=ErrorCode.BUSY, message=str(exc))
        except UpstreamRequestError as exc:
            return Error(id=rid, code=ErrorCode.IB_ERROR, ib_code=exc.code,
                         message=f"IB refused the contract lookup: {exc.message}")
        except TimeoutError:
            return Error(id=rid, code=ErrorCode.TIMEOUT,
                         message=f"no contract details within {self.settings.request_timeout:g}s")
        if found:
            if len(self._resolved) >= RESOLVE_CACHE_MAX:
                self._resolved.clear()
            self._resolved[spec] = found
            for info in found:
                self.remember(info)
        return found

    def _resolved_done(self, spec: ContractSpec, fut: asyncio.Future[Any]) -> None:
        self._resolving.pop(spec, None)
        if not fut.cancelled():
            fut.exception()  # retrieved here; every waiter got it through shield()

    def remember(self, info: ContractInfo) -> None:
        """A contract the Gateway described (see ``_by_con_id``)."""
        if len(self._by_con_id) >= RESOLVE_CACHE_MAX:
            self._by_con_id.clear()
        self._by_con_id[info.con_id] = info

    async def resolve_one(self, rid: int, spec: ContractSpec) -> ContractInfo | Error:
        """The one contract ``spec`` names, or the Error reply explaining why not."""
        if spec.con_id:
            known = self._by_con_id.get(spec.con_id)
            if known is not None:
                return known
        found = await self.resolve(rid, spec)
        if isinstance(found, Error):
            return found
        if not found:
            return Error(id=rid, code=ErrorCode.UNKNOWN_CONTRACT,
                         message=f"no contract matches {describe_spec(spec)}")
        if len(found) > 1:
            options = ", ".join(
                f"{c.symbol} {c.sec_type} {c.expiry} {c.strike or ''}{c.right} {c.exchange} "
                f"{c.currency} (con_id {c.con_id})".replace("  ", " ")
                for c in found[:10]
            )
            more = f" and {len(found) - 10} more" if len(found) > 10 else ""
            return Error(id=rid, code=ErrorCode.AMBIGUOUS_CONTRACT,
                         message=f"{len(found)} contracts match {describe_spec(spec)}: "
                                 f"{options}{more}; add fields or give con_id")
        return found[0]


def default_bars(info: ContractInfo) -> str:
    """What plain ``kind="bars"`` shows: TRADES, or MIDPOINT for forex (no trades at IB)."""
    return "MIDPOINT" if info.sec_type == "CASH" else "TRADES"


def describe_spec(spec: ContractSpec) -> str:
    if spec.con_id:
        return f"con_id {spec.con_id}"
    parts = [spec.symbol, spec.sec_type, spec.expiry, str(spec.strike or ""), spec.right,
             spec.exchange, spec.currency]
    return " ".join(p for p in parts if p)

"""Market-data requests: subscribe, unsubscribe, snapshot, contract details, bars.

Thin over the market-data service (:class:`~ibhub.hub.market_data.MarketDataService`,
shared with the TWS front door) and the fan-out's last values. Subscribe and the
one-off queries wait on the Gateway and run as tasks (``slow``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ibhub.hub.registry import Context, Registry, unknown_lease
from ibhub.hub.subscriptions import KINDS, LineLimit, NotSubscribed, valid_kind
from ibhub.ib.queries import UpstreamDown, UpstreamRequestError
from ibhub.protocol import (
    ContractDetailsReply,
    Error,
    ErrorCode,
    GetContractDetails,
    GetHistoricalBars,
    GetHistoricalTicks,
    GetSnapshot,
    HistoricalBarsReply,
    HistoricalTicksReply,
    Ok,
    Reply,
    Snapshot,
    Subscribe,
    Subscribed,
    Unsubscribe,
)
from ibhub.tws.pacing import PacerBusy

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer

log = logging.getLogger(__name__)


class MarketRequests:
    """Serves the market-data requests for ``hub``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def register(self, registry: Registry) -> None:
        registry.add(Subscribe, self.subscribe, slow=True, lease=True)
        registry.add(Unsubscribe, self.unsubscribe, lease=True)
        registry.add(GetSnapshot, self.snapshot)
        registry.add(GetContractDetails, self.contract_details, slow=True)
        registry.add(GetHistoricalBars, self.historical_bars, slow=True)
        registry.add(GetHistoricalTicks, self.historical_ticks, slow=True)

    async def subscribe(self, req: Subscribe, ctx: Context) -> Reply:
        hub = self.hub
        if not valid_kind(req.kind):
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message=f"unknown subscription kind {req.kind!r}; one of "
                                 f"{', '.join(KINDS)}")
        resolved = await hub.market.resolve_one(req.id, req.contract)
        if isinstance(resolved, Error):
            return resolved
        info = resolved
        lease = hub.leases.get(req.lease)
        if lease is None:  # expired while we were resolving
            return unknown_lease(req.id, req.lease)
        try:
            sub, created = hub.market.open_line(lease.lease_id, info, req.kind, pace=True)
        except LineLimit as exc:
            return Error(id=req.id, code=ErrorCode.LINE_LIMIT, message=str(exc))
        except PacerBusy as exc:
            return Error(id=req.id, code=ErrorCode.BUSY, message=str(exc))
        lease.topics.add(sub.topic)
        if created:
            log.info("subscribed %s (con_id %s) upstream for %r",
                     sub.topic, info.con_id, lease.name)
        return Subscribed(id=req.id, topic=sub.topic, contract=sub.contract,
                          subscribers=len(sub.leases))

    def unsubscribe(self, req: Unsubscribe, ctx: Context) -> Reply:
        assert ctx.lease is not None  # a lease route
        try:
            self.hub.market.release(req.lease, req.topic)
        except NotSubscribed as exc:
            return Error(id=req.id, code=ErrorCode.NOT_SUBSCRIBED, message=str(exc))
        ctx.lease.topics.discard(req.topic)
        return Ok(id=req.id)

    def snapshot(self, req: GetSnapshot, ctx: Context) -> Reply:
        fanout = self.hub.fanout
        assert fanout is not None
        topics, seqs, events = fanout.snapshot(req.topic)
        return Snapshot(id=req.id, topics=topics, seqs=seqs, events=events)

    async def contract_details(self, req: GetContractDetails, ctx: Context) -> Reply:
        found = await self.hub.market.resolve(req.id, req.contract)
        if isinstance(found, Error):
            return found
        return ContractDetailsReply(id=req.id, contracts=found)

    async def historical_bars(self, req: GetHistoricalBars, ctx: Context) -> Reply:
        hub = self.hub
        resolved = await hub.market.resolve_one(req.id, req.contract)
        if isinstance(resolved, Error):
            return resolved
        assert hub.upstream is not None
        try:
            bars = await hub.upstream.historical_bars(
                resolved, duration=req.duration, bar_size=req.bar_size,
                what_to_show=req.what_to_show, use_rth=req.use_rth, end=req.end,
            )
        except UpstreamDown as exc:
            return Error(id=req.id, code=ErrorCode.UPSTREAM_DOWN, message=str(exc))
        except UpstreamRequestError as exc:
            return Error(id=req.id, code=ErrorCode.IB_ERROR, ib_code=exc.code,
                         message=f"IB refused the historical request: {exc.message}")
        except TimeoutError as exc:
            return Error(id=req.id, code=ErrorCode.TIMEOUT, message=str(exc))
        except PacerBusy as exc:
            return Error(id=req.id, code=ErrorCode.BUSY, message=str(exc))
        return HistoricalBarsReply(id=req.id, contract=resolved, bars=bars)

    async def historical_ticks(self, req: GetHistoricalTicks, ctx: Context) -> Reply:
        """IB's historical ticks; the arguments are checked here, IB's own
        errors (162 no data, 321) come back as ``ib_error`` with the code."""
        if req.what_to_show not in ("TRADES", "BID_ASK", "MIDPOINT"):
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message=f"what_to_show must be TRADES, BID_ASK or MIDPOINT, got "
                                 f"{req.what_to_show!r}")
        if not 1 <= req.count <= 1000:
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message=f"count must be 1..1000, got {req.count}")
        if bool(req.start) == bool(req.end):
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message="give exactly one of start and end (IB's rule)")
        hub = self.hub
        resolved = await hub.market.resolve_one(req.id, req.contract)
        if isinstance(resolved, Error):
            return resolved
        assert hub.upstream is not None
        try:
            ticks = await hub.upstream.historical_ticks(
                resolved, what_to_show=req.what_to_show, count=req.count, start=req.start,
                end=req.end, use_rth=req.use_rth)
        except UpstreamDown as exc:
            return Error(id=req.id, code=ErrorCode.UPSTREAM_DOWN, message=str(exc))
        except UpstreamRequestError as exc:
            return Error(id=req.id, code=ErrorCode.IB_ERROR, ib_code=exc.code,
                         message=f"IB refused the historical ticks request: {exc.message}")
        except PacerBusy as exc:
            return Error(id=req.id, code=ErrorCode.BUSY, message=str(exc))
        except TimeoutError:
            return Error(id=req.id, code=ErrorCode.TIMEOUT,
                         message=f"no historical ticks within "
                                 f"{hub.settings.request_timeout:g}s")
        return HistoricalTicksReply(id=req.id, contract=resolved, ticks=ticks)

"""The status request: the hub's state in one reply (``ibhub status``, ``ibhub top``).

The upstream session, the leases and their subscriptions, the lines used, raw client
ids, trading state, the upstream queue and its back-pressure, connection counts.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ibhub.hub.limits import limits_of
from ibhub.hub.registry import Context, Registry
from ibhub.protocol import (
    GetStatus,
    LeaseInfo,
    Reply,
    StatusReply,
    SubscriptionInfo,
)

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer


class StatusRequests:
    """Serves ``status`` for ``hub``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def register(self, registry: Registry) -> None:
        registry.add(GetStatus, self.status)

    def status(self, req: GetStatus, ctx: Context) -> Reply:
        hub = self.hub
        up = hub.upstream
        assert up is not None
        now = hub.leases.now()
        subs = hub.subs.all()
        newest = max((s.stream.last_ts for s in subs), default=0)
        return StatusReply(
            id=req.id,
            connected=up.connected,
            state=up.state,
            host=up.host,
            port=up.port,
            client_id=up.client_id,
            server_version=up.server_version,
            accounts=up.accounts,
            uptime_seconds=time.monotonic() - hub.started_at,
            reconnect_count=up.reconnect_count,
            connected_at=up.connected_at,
            last_tick_at=newest / 1e9 if newest else None,
            leases=[
                LeaseInfo(lease=ls.lease_id, name=ls.name, role=ls.role, client_id=ls.client_id,
                          subscriptions=len(ls.topics), age_seconds=now - ls.created,
                          gaps=ls.gaps, lag_ms=ls.lag_ms)
                for ls in hub.leases.leases()
            ],
            subscriptions=[
                SubscriptionInfo(topic=s.topic, con_id=s.con_id, kind=s.kind,
                                 subscribers=len(s.leases), ticks=s.stream.ticks)
                for s in (*subs, *hub.market.depth.all())
            ],
            depth_used=hub.market.depth.lines_used,
            depth_max=hub.market.depth.lines_max,
            lines_used=hub.subs.lines_used,
            lines_max=hub.subs.lines_max,
            raw_client_ids=sorted(r.client_id for r in hub.leases.raw_leases()),
            trading=hub.orders.status()["trading"] if hub.orders is not None else "off",
            upstream_queue=hub.pacer.depth() if hub.pacer is not None else {},
            connections={n: {k: int(v) for k, v in st.as_dict().items()}
                         for n, st in limits_of(hub).listeners.items()},
            nats=hub.nats.report() if hub.nats is not None else {},
            **self.pacing(),
        )

    def pacing(self) -> dict[str, Any]:
        """Back-pressure fields of the status reply (docs/orders.md, "Back-pressure")."""
        hub = self.hub
        pacer = hub.pacer if hub.pacer is not None else getattr(hub.orders, "pacer", None)
        if pacer is None:
            return {}
        snap = pacer.snapshot()
        return {
            "expected_order_delay": snap["expected_order_delay"],
            "max_order_delay": getattr(getattr(hub.orders, "settings", None),
                                       "max_order_delay", 0.0),
            "upstream_queued": snap["queued"] + snap["reserved"],
            "upstream_queue_max": pacer.max_queue or 0,
            "upstream_queue_per_lease": pacer.max_queue_per_owner or 0,
            "busy_refusals": snap["refused"],
            "order_wait_max": snap["max_order_wait_seconds"],
        }

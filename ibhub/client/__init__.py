"""The ibhub Python SDK: ``from ibhub.client import Hub, AsyncHub``.

``AsyncHub`` is the asyncio core; ``Hub`` is its blocking, thread-safe facade for
plain scripts. Both talk to a running ``ibhub run`` over ZeroMQ and import neither
``ib_insync`` nor the hub's internals.

Blocking::

    with Hub() as hub:                       # endpoints: args, IBHUB_PUB/IBHUB_RPC, defaults
        hub.add_disconnect_handler(lambda status: print("upstream down", status.state))
        for tick in hub.subscribe("AAPL"):   # typed protocol.Tick objects
            print(tick.seq, tick.bid, tick.ask)

asyncio::

    async with AsyncHub() as hub:
        sub = await hub.subscribe("EUR", sec_type="CASH", exchange="IDEALPRO")
        async for tick in sub:
            ...

Trading (docs/orders.md, "Orders from the SDK")::

    order = hub.place_order("AAPL", "BUY", 10, order_type="LMT", limit_price=180.0)
    hub.wait_done(order, timeout=30)         # Hub; with AsyncHub: await order.wait_done(30)
    print(order.status, order.filled, order.avg_fill_price, order.commission)

A refused order raises ``OrderRejectedError`` (``reason``, ``message``).

The SDK holds a lease (heartbeats for it), says hello again and re-subscribes if
the hub forgot it (lease expiry, hub restart), checks every topic's sequence numbers
and recovers gaps from a snapshot (``sub.gaps`` counts them). Refusals raise
``HubError(code, message, ib_code)``; no answer in time raises ``HubTimeout``.
"""

from ibhub.client.async_hub import AsyncHub
from ibhub.client.batch import Batch, BatchSubscription, Tap
from ibhub.client.contracts import contract_spec
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.orders import Fill, Order, OrderRejectedError
from ibhub.client.subscription import Subscription
from ibhub.client.sync_hub import BlockingSubscription, Hub
from ibhub.protocol import (
    AccountValue,
    Bar,
    BarData,
    ContractInfo,
    ContractSpec,
    ErrorCode,
    ErrorEvent,
    ExecutionInfo,
    HubStatus,
    OrderEvent,
    OrderInfo,
    PortfolioItem,
    PositionInfo,
    RejectReason,
    StatusReply,
    Tick,
)

__all__ = [
    "AccountValue",
    "AsyncHub",
    "Bar",
    "BarData",
    "Batch",
    "BatchSubscription",
    "BlockingSubscription",
    "ContractInfo",
    "ContractSpec",
    "ErrorCode",
    "ErrorEvent",
    "ExecutionInfo",
    "Fill",
    "Hub",
    "HubError",
    "HubStatus",
    "HubTimeout",
    "NotConnected",
    "Order",
    "OrderEvent",
    "OrderInfo",
    "OrderRejectedError",
    "PortfolioItem",
    "PositionInfo",
    "RejectReason",
    "StatusReply",
    "Subscription",
    "Tap",
    "Tick",
    "contract_spec",
]

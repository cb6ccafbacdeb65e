"""The ibhub Python SDK: ``from ibhub.client import Hub, AsyncHub``.

``AsyncHub`` is the asyncio core; ``Hub`` is its blocking, thread-safe facade for
plain scripts. Both talk to a running ``ibhub run`` over ZeroMQ and import neither
``ib_insync`` nor the hub's internals.
"""

from ibhub.client.async_hub import AsyncHub, contract_spec
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.subscription import Subscription
from ibhub.client.sync_hub import BlockingSubscription, Hub
from ibhub.protocol import (
    Bar,
    BarData,
    ContractInfo,
    ContractSpec,
    ErrorCode,
    ErrorEvent,
    HubStatus,
    StatusReply,
    Tick,
)

__all__ = [
    "AsyncHub",
    "Bar",
    "BarData",
    "BlockingSubscription",
    "ContractInfo",
    "ContractSpec",
    "ErrorCode",
    "ErrorEvent",
    "Hub",
    "HubError",
    "HubStatus",
    "HubTimeout",
    "NotConnected",
    "StatusReply",
    "Subscription",
    "Tick",
    "contract_spec",
]

"""The upstream order port: the boundary between the order manager
(:mod:`ibhub.orders.manager`) and the Gateway session.

The order manager never sees the IB library: it asks the upstream to act through the small
:class:`OrderUpstream` protocol and is told what happened through plain frozen
dataclasses (openOrder, orderStatus, execDetails, commissionReport, order errors).
:mod:`ibhub.ib.orders` (in the only package that imports the IB library) adapts
both directions; the unit tests
use a fake that records calls.

Order references: every order the hub places carries ``orderRef`` =
``ibhub1:<len(owner)>:<owner><client_order_id>`` so that, even if the journal were
lost, an order seen at the Gateway can be traced back to its owner and client order
id (reconciliation uses this before declaring an order external).

A script's own ``order_ref`` does not go upstream: the journal stores it and the hub
shows it back (OrderInfo, ExecutionInfo, the front door's openOrder, completed orders
and executions). One orderRef slot cannot hold both, and the hub's must survive a lost
journal; a script's label only matters to that script, which reads it from the hub.
A lost journal loses the script's labels, never the ownership.

OCA groups are per script: upstream the group is ``make_oca_group(owner, group)``
(the orderRef scheme), because every hub order shares the hub's one client id at the
Gateway, and two scripts that both call their group "exit" must not cancel each
other's orders. Scripts see the group name they gave.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from ibhub.protocol import ContractSpec

ORDER_REF_PREFIX = "ibhub1:"


@dataclass(frozen=True)
class OrderFields:
    """What the upstream needs besides the contract to place (or modify) an order."""

    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    outside_rth: bool
    account: str
    parent_id: int = 0
    transmit: bool = True
    order_ref: str = ""
    oca_group: str = ""  # as sent upstream (already carrying the owner prefix)
    oca_type: int = 0
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()
    algo_id: str = ""
    # order-type fields (ibhub/orders/order_types.py PARAM_FIELDS) that are set
    params: tuple[tuple[str, object], ...] = ()


@dataclass(frozen=True)
class UpstreamOrder:
    """An openOrder (with its orderState.status), or an entry of reqCompletedOrders."""

    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    currency: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    outside_rth: bool
    account: str
    order_ref: str
    parent_id: int
    status: str
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    oca_group: str = ""
    oca_type: int = 0
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class UpstreamStatus:
    """An orderStatus message."""

    order_id: int
    client_id: int
    perm_id: int
    status: str
    filled: float
    remaining: float
    avg_fill_price: float
    last_fill_price: float = 0.0
    why_held: str = ""


@dataclass(frozen=True)
class UpstreamExecution:
    """An execDetails message (a fill)."""

    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    symbol: str
    side: str  # BOT / SLD
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    time_ns: int
    account: str
    exchange: str
    order_ref: str = ""


@dataclass(frozen=True)
class UpstreamCommission:
    """A commissionReport message (follows its execDetails)."""

    exec_id: str
    commission: float
    currency: str
    realized_pnl: float | None = None


@dataclass(frozen=True)
class UpstreamWhatIf:
    """The orderState of a whatIf openOrder (IB sends the margins as strings)."""

    status: str
    margins: tuple[float | None, ...]  # init/maint/ewl before, change, after (9)
    commission: float | None
    min_commission: float | None
    max_commission: float | None
    commission_currency: str
    warning_text: str


class UpstreamRefused(Exception):
    """The Gateway answered a request with an error (``code`` is IB's)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"IB {code}: {message}")
        self.code = code
        self.message = message


class OrderUpstream(Protocol):
    """What the order manager needs from the Gateway session. Sends are synchronous writes
    to the socket (the pacer decides *when*); answers arrive through the book's
    ``on_*`` methods."""

    @property
    def client_id(self) -> int:
        """The hub's own TWS client id: orders with another client id are external."""
        ...

    def is_connected(self) -> bool: ...

    def next_order_id(self) -> int:
        """The next order id of the session (strictly increasing, shared with request ids)."""
        ...

    def ensure_ids_above(self, order_id: int) -> None:
        """Make every later ``next_order_id`` larger than ``order_id`` (journal restore)."""
        ...

    def place(self, order_id: int, contract: ContractSpec, fields: OrderFields) -> None:
        """placeOrder: a new order, or a modification when ``order_id`` already exists."""
        ...

    def cancel(self, order_id: int) -> None: ...

    def global_cancel(self) -> None: ...


def make_order_ref(owner: str, client_order_id: str) -> str:
    return f"{ORDER_REF_PREFIX}{len(owner)}:{owner}{client_order_id}"


def parse_order_ref(ref: str) -> tuple[str, str] | None:
    """(owner, client_order_id) from an orderRef the hub wrote, else None."""
    if not ref.startswith(ORDER_REF_PREFIX):
        return None
    rest = ref[len(ORDER_REF_PREFIX) :]
    length, sep, tail = rest.partition(":")
    if not sep or not length.isdigit():
        return None
    n = int(length)
    if n > len(tail) or n == len(tail):
        return None
    return tail[:n], tail[n:]


def make_oca_group(owner: str, group: str) -> str:
    """The upstream ocaGroup of a script's group ("" stays "": no group)."""
    return make_order_ref(owner, group) if group else ""


def script_oca_group(upstream: str) -> str:
    """The group name a script gave, from an upstream ocaGroup the hub wrote (else as is)."""
    parsed = parse_order_ref(upstream)
    return parsed[1] if parsed is not None else upstream


def encode_algo_params(params: dict[str, str]) -> str:
    """The journal's text form of algo parameters ("" for none)."""
    return json.dumps(params, separators=(",", ":")) if params else ""


def decode_algo_params(text: str) -> dict[str, str]:
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}

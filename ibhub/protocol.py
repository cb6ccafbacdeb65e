"""ibhub's ZeroMQ message types: msgspec structs only, no I/O.

Everything that crosses a hub socket is one of the frozen, tagged structs below.
``docs/protocol.md`` is the normative description; this module is its reference
implementation. Rules that keep old clients working (schema evolution):

* New fields are appended at the end of a struct and always have a default.
* Fields are never retyped, reordered or removed; tags are never reused.
* ``PROTOCOL_VERSION`` changes only for a break; the hub refuses a ``Hello`` whose
  major version differs.

Events are ``array_like`` (encoded as msgpack arrays: smaller and ~25% faster than
maps, measured on this machine), because they are the hot path. Requests and replies
are maps: they are rare, and names make them easy to produce from other languages.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec
from msgspec import Meta, Struct

PROTOCOL_VERSION = 2
# 2: tick topics carry ``Ticks`` batches (several ticks of one instrument in one
# message) as well as single ``Tick`` events. A version-1 client would skip every
# batch as an unknown tag and silently lose most ticks, so the hub refuses it.

# --------------------------------------------------------------------------- text limits
# Every text field of a request may end up in a message to the Gateway (symbols,
# accounts, order refs built from names and client order ids, ...). NUL is the TWS
# field separator: a NUL inside a field shifts every later field of the message (an
# account "DU1\0\0" once moved the order ref into the parentId slot). So decoding
# refuses, naming the field:
#
# * C0 controls (U+0000-U+001F: NUL, TAB, CR, LF, ...), DEL (U+007F) and the C1 controls
#   (U+0080-U+009F), plus the Unicode line/paragraph separators (U+2028/U+2029). None
#   is ever part of an IB symbol, code, account or reference; C1 and the separators
#   are refused too because they act as controls in terminals and log viewers (a CSI
#   U+009B or a line break in a symbol could forge log lines). Other Unicode (accented
#   names, CJK local symbols) is allowed: IB has such names, and UTF-8 carries no NUL.
# * text longer than a limit per kind of field (below): far above any real value, low
#   enough that a careless or hostile value is refused instead of passed on.
#
# The pattern ends in ``\Z``, not ``$`` (which also matches before a final newline).

TEXT_PATTERN: Final = "^[^\\x00-\\x1f\\x7f-\\x9f\\u2028\\u2029]*\\Z"
MAX_CODE: Final = 32  # sec_type, exchange, currency, right, tif, order type, bar size, ...
MAX_SYMBOL: Final = 64  # symbol, local symbol, trading class (option local symbols ~21)
MAX_ACCOUNT: Final = 64  # account ids (DU1234567) and FA group names
MAX_CLIENT_ORDER_ID: Final = 64  # becomes part of the IB orderRef
MAX_NAME: Final = 200  # a script's name (the order owner, also part of the orderRef)
MAX_TOKEN: Final = 256  # lease ids, topics, account-summary tags, duration / end strings
MAX_TAGS: Final = 256  # entries in an account-summary tag list
MAX_ALGO_PARAMS: Final = 32  # tag/value parameters of an IB algo (Adaptive has 1, Vwap ~8)

Code = Annotated[str, Meta(max_length=MAX_CODE, pattern=TEXT_PATTERN)]
Symbol = Annotated[str, Meta(max_length=MAX_SYMBOL, pattern=TEXT_PATTERN)]
Account = Annotated[str, Meta(max_length=MAX_ACCOUNT, pattern=TEXT_PATTERN)]
ClientOrderId = Annotated[str, Meta(max_length=MAX_CLIENT_ORDER_ID, pattern=TEXT_PATTERN)]
Name = Annotated[str, Meta(max_length=MAX_NAME, pattern=TEXT_PATTERN)]
Token = Annotated[str, Meta(max_length=MAX_TOKEN, pattern=TEXT_PATTERN)]

# --------------------------------------------------------------------------- shared


class ContractSpec(Struct, frozen=True, omit_defaults=True):
    """What a script asks for. Either ``con_id`` alone or a symbol with filters."""

    symbol: Symbol = ""
    sec_type: Code = "STK"
    exchange: Code = "SMART"
    currency: Code = "USD"
    expiry: Code = ""  # lastTradeDateOrContractMonth: YYYYMM or YYYYMMDD
    strike: float = 0.0
    right: Code = ""  # "C" / "P" for options
    multiplier: Code = ""
    con_id: int = 0
    primary_exchange: Code = ""
    local_symbol: Symbol = ""
    trading_class: Symbol = ""


class ContractInfo(Struct, frozen=True):
    """A qualified contract with the details scripts usually need."""

    con_id: int
    symbol: str
    sec_type: str
    exchange: str
    primary_exchange: str
    currency: str
    local_symbol: str
    trading_class: str
    expiry: str
    strike: float
    right: str
    multiplier: str
    min_tick: float
    long_name: str
    time_zone: str = ""
    trading_hours: str = ""
    liquid_hours: str = ""


class BarData(Struct, frozen=True, array_like=True):
    """One historical bar. ``time`` is epoch seconds UTC (daily bars: 00:00 UTC of the day)."""

    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


# --------------------------------------------------------------------------- requests


class Request(Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every request. ``id`` is chosen by the client and echoed in the reply."""

    id: int


class Hello(Request, frozen=True, tag="hello"):
    name: Name
    role: Code = "trader"  # "trader", "readonly" or "operator" (may also global-cancel)
    # The client's protocol version. A hello without it is a version-1 client (whose
    # document gave it this default): refused, since it cannot read tick batches.
    # Clients send PROTOCOL_VERSION explicitly.
    protocol: int = 1
    # Proof for role="operator" on a loopback hub: the operator token the hub keeps in
    # its data dir (operator.token, readable only by the hub's user). See docs/security.md.
    credential: Token = ""
    # The script name's secret (docs/security.md, "Script names"): a name is bound to
    # the first secret (or, with CURVE, the first key) that says hello with it; later
    # hellos with that name need the same secret. Empty: the hub makes one for an
    # unbound name and returns it once in ``Welcome.name_secret``.
    name_secret: Token = ""


class Heartbeat(Request, frozen=True, tag="heartbeat"):
    lease: Token
    # recording: how this client keeps up, for the hub's slow-subscriber
    # metrics (a PUB socket drops silently; only the subscriber sees the gaps).
    # gaps: sequence gaps it detected since it connected; lag_ms: how far behind the
    # hub's timestamps it is, as the client measured it (0: not measured).
    gaps: int = 0
    lag_ms: float = 0.0


class Goodbye(Request, frozen=True, tag="goodbye"):
    lease: Token


class Subscribe(Request, frozen=True, tag="subscribe"):
    """Stream market data. ``kind``: "ticks" (top of book), "bars" (5-second real-time
    bars), "depth" (the SMART depth book, :class:`DepthBook`) or "tbt.<type>"
    (tick-by-tick: Last, AllLast, BidAsk, MidPoint; :class:`TickByTick`)."""

    lease: Token
    contract: ContractSpec
    kind: Code = "ticks"


class Unsubscribe(Request, frozen=True, tag="unsubscribe"):
    lease: Token
    topic: Token


class GetSnapshot(Request, frozen=True, tag="snapshot"):
    """The last event published on ``topic`` (or on every topic starting with it)."""

    topic: Token


class GetContractDetails(Request, frozen=True, tag="contract_details"):
    contract: ContractSpec


class GetHistoricalBars(Request, frozen=True, tag="historical_bars"):
    contract: ContractSpec
    duration: Token = "1 D"  # IB duration string: "60 S", "5 D", "2 W", "1 M", "1 Y"
    bar_size: Code = "1 hour"  # IB bar size: "1 secs" ... "1 month"
    what_to_show: Code = "TRADES"
    use_rth: bool = True
    end: Token = ""  # "" = now, else "YYYYMMDD HH:MM:SS UTC"


class LeaseClientId(Request, frozen=True, tag="lease_client_id"):
    """A raw TWS client id for a script that must open its own Gateway connection."""

    name: Name
    # seconds; 0 = the hub's raw_lease_ttl (24 h by default; the owning lease's life
    # when ``lease`` is given); longer than raw_lease_ttl is cut to it
    ttl: float = 0.0
    lease: Token = ""  # optional: tie the raw id to this lease's life
    token: Token = ""  # renew the raw id this token (from client_id_leased) names instead


class ReleaseClientId(Request, frozen=True, tag="release_client_id"):
    client_id: int
    token: Token = ""  # the raw id's token from client_id_leased
    credential: Token = ""  # or the operator token: release anyone's raw id


class GetStatus(Request, frozen=True, tag="status"):
    pass


class ListNames(Request, frozen=True, tag="list_names"):
    """Operator: the bound script names (docs/security.md, "Script names")."""

    lease: Token


class ForgetName(Request, frozen=True, tag="forget_name"):
    """Operator: drop a script name's binding; the next hello with it binds it anew."""

    lease: Token
    name: Name


# ------------------------------------------------------------ requests: orders and account
# Orders carry a script-chosen ``client_order_id``: the same (owner name, client_order_id)
# always means the same order, across a lost reply, a retry and a hub restart.
# Order type / action / tif are plain strings (IB's spelling) validated by the hub's risk
# gate, so an unknown value is refused with a reason instead of failing to decode.


class PlaceOrder(Request, frozen=True, tag="place_order"):
    """Place one order (or a bracket: parent plus take-profit and/or stop-loss children).

    ``action``: "BUY" / "SELL". ``order_type``: "MKT", "LMT", "STP", "STP LMT", "TRAIL",
    "TRAIL LIMIT", "MIT", "LIT", "MOC", "LOC", "REL", "MIDPRICE" (the fields each takes:
    ``ibhub/orders/order_types.py``). ``limit_price`` is required for LMT, STP LMT, LIT and
    LOC, ``stop_price`` (the stop or trigger) for STP, STP LMT, MIT and LIT.
    ``tif``: "DAY", "GTC", "IOC", "FOK", "GTD" (with ``good_till_date``).
    ``account`` "" = the hub's (first) account.
    ``take_profit`` / ``stop_loss`` (optional) turn the order into a bracket: the hub places
    the parent held (transmit off) and the children opposite-side with ``parentId``; the
    children get client order ids ``<client_order_id>.tp`` / ``.sl``.
    ``parent_order_id`` links this order to an existing parent (advanced use).

    ``oca_group`` / ``oca_type``: IB's One-Cancels-All group of this script's orders
    (groups are per script: two scripts' groups of the same name never touch) and how a
    fill treats the group's other orders: 1 cancel them (with block), 2 reduce them by
    the filled quantity (with block), 3 reduce them (no block); 0 leaves it to IB.
    ``order_ref``: the script's own label, stored and shown back (OrderInfo, the front
    door's openOrder and executions); upstream the hub keeps its own orderRef.
    ``algo_strategy`` / ``algo_params`` / ``algo_id``: an IB algo ("Adaptive",
    "Twap", ...) with its tag/value parameters, passed to the Gateway unchanged.
    In a bracket these apply to the parent; ``order_ref`` also labels the children.
    """

    lease: Token
    client_order_id: ClientOrderId
    contract: ContractSpec
    action: Code
    quantity: float
    order_type: Code = "MKT"
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Code = "DAY"
    outside_rth: bool = False
    account: Account = ""
    take_profit: float | None = None
    stop_loss: float | None = None
    parent_order_id: int = 0
    oca_group: ClientOrderId = ""
    oca_type: int = 0
    order_ref: ClientOrderId = ""
    algo_strategy: Code = ""
    algo_params: Annotated[
        dict[ClientOrderId, ClientOrderId], Meta(max_length=MAX_ALGO_PARAMS)
    ] = {}
    algo_id: ClientOrderId = ""
    # order types beyond MKT/LMT/STP/STP LMT (ibhub/orders/order_types.py): TRAIL,
    # TRAIL LIMIT, MIT/LIT (``stop_price`` is the trigger), MOC/LOC, REL, MIDPRICE; TIF GTD
    trailing_amount: float | None = None  # TRAIL / TRAIL LIMIT: stop this far from the best
    trailing_percent: float | None = None  # ... or this percentage of the price
    trail_stop_price: float | None = None  # initial stop of a trailing order
    limit_price_offset: float | None = None  # TRAIL LIMIT: limit = stop -/+ this offset
    peg_offset: float | None = None  # REL: offset from the bid (buy) / ask (sell)
    good_till_date: ClientOrderId = ""  # tif GTD: "YYYYMMDD HH:MM:SS [zone]"
    stop_loss_limit: float | None = None  # bracket: the stop-loss leg is STP LMT at this limit


# --- what-if orders (trading): margin and commission of an order, never a working order
class WhatIfOrder(PlaceOrder, frozen=True, kw_only=True, tag="what_if_order"):
    """Ask the Gateway what ``PlaceOrder`` with these fields would do to the account
    (IB's whatIf): the answer is a :class:`WhatIfReply`; nothing is placed, journaled or
    shown as an order. The same checks as a real order apply (role, live guard, fields,
    price band, rate limit), except that ``client_order_id`` may be empty; a bracket
    (``take_profit`` / ``stop_loss``) or ``parent_order_id`` is refused: ask per leg."""

    client_order_id: ClientOrderId = ""


# --- PnL (trading): IB's reqPnL / reqPnLSingle, one upstream subscription each, shared
class GetPnL(Request, frozen=True, tag="pnl"):
    """The hub's PnL of ``account`` ("" = every managed account): per account (``con_id``
    0) and per position. No lease needed."""

    account: Account = ""


class ModifyOrder(Request, frozen=True, tag="modify_order"):
    """Change a working order of mine; fields left ``None`` keep their value.

    The order is named by ``order_id`` or, if 0, by ``client_order_id``.
    """

    lease: Token
    order_id: int = 0
    client_order_id: ClientOrderId = ""
    quantity: float | None = None
    limit_price: float | None = None
    stop_price: float | None = None
    tif: Code | None = None
    outside_rth: bool | None = None


class CancelOrder(Request, frozen=True, tag="cancel_order"):
    """Cancel one order of mine, by ``order_id`` or (if 0) by ``client_order_id``."""

    lease: Token
    order_id: int = 0
    client_order_id: ClientOrderId = ""


class CancelAllOrders(Request, frozen=True, tag="cancel_all_orders"):
    """Cancel every working order owned by this lease's script (name)."""

    lease: Token


class GlobalCancel(Request, frozen=True, tag="global_cancel"):
    """Cancel every working order of the account, external ones too (operator role only)."""

    lease: Token


class GetOpenOrders(Request, frozen=True, tag="open_orders"):
    """Working orders. ``scope``: "mine" (this lease's script) or "all" (operator role)."""

    lease: Token
    scope: Code = "mine"


class GetCompletedOrders(Request, frozen=True, tag="completed_orders"):
    """Filled, cancelled or rejected orders known to the hub's journal (same scopes)."""

    lease: Token
    scope: Code = "mine"


class GetExecutions(Request, frozen=True, tag="executions"):
    """Fills with their commissions (same scopes)."""

    lease: Token
    scope: Code = "mine"


class GetPositions(Request, frozen=True, tag="positions"):
    account: Account = ""  # "" = every account


class GetPortfolio(Request, frozen=True, tag="portfolio"):
    account: Account = ""


class GetAccountValues(Request, frozen=True, tag="account_values"):
    account: Account = ""


class GetAccountSummary(Request, frozen=True, tag="account_summary"):
    account: Account = ""
    tags: Annotated[list[Token], Meta(max_length=MAX_TAGS)] = []  # [] = every tag the hub has


# ------------------------------------------------------------ requests: market data


class GetHistoricalTicks(Request, frozen=True, tag="historical_ticks"):
    """IB's historical ticks: ``what_to_show`` TRADES, BID_ASK or MIDPOINT; exactly one of
    ``start`` / ``end`` ("YYYYMMDD-HH:MM:SS" UTC or "YYYYMMDD HH:MM:SS <zone>"); ``count``
    1..1000 ticks from ``start`` forward or back from ``end``."""

    contract: ContractSpec
    what_to_show: Code = "TRADES"
    count: int = 1000
    start: Token = ""
    end: Token = ""
    use_rth: bool = False


# ------------------------------------------------------------ options and instrument data
# (option chains, IV / price calculations, symbol search)


class GetOptionChain(Request, frozen=True, tag="option_chain"):
    """The expirations and strikes of ``underlying``'s options (IB reqSecDefOptParams),
    one :class:`OptionChain` per exchange and trading class; ``exchange`` "" = all."""

    underlying: ContractSpec
    exchange: Code = ""


class CalculateImpliedVolatility(Request, frozen=True, tag="implied_volatility"):
    """IB's model: the implied volatility (and greeks) of ``contract`` at ``option_price``
    with the underlying at ``underlying_price``."""

    contract: ContractSpec
    option_price: float
    underlying_price: float


class CalculateOptionPrice(Request, frozen=True, tag="option_price"):
    """IB's model: the price (and greeks) of ``contract`` at ``volatility`` (0.2 = 20%)
    with the underlying at ``underlying_price``."""

    contract: ContractSpec
    volatility: float
    underlying_price: float


# ------------------------------------------------------------ requests: the lane
# The lane (ibhub.hub.lane, docs/protocol.md "The lane"): a local plain socket beside
# ZeroMQ for one lease's requests and its own order/error events.


class LaneTicket(Request, frozen=True, tag="lane_ticket"):
    """Ask (over ZeroMQ) for a one-time ticket to attach a lane connection to this lease."""

    lease: Token


class LaneAttach(Request, frozen=True, tag="lane_attach"):
    """The first frame on a lane connection: the ticket and the lease's token (both
    needed: the ticket is single use and bound to the lease that asked for it)."""

    ticket: Token
    lease: Token
    # True: this connection carries the hub's ``bundle.tick`` (and nothing else is
    # pushed on it); the lease's order and error events go to its other lane connection
    ticks: bool = False


class GetMatchingSymbols(Request, frozen=True, tag="matching_symbols"):
    """Contracts whose symbol starts with (or name contains) ``pattern`` (IB
    reqMatchingSymbols: at most 16, stocks and other underlyings)."""

    pattern: Symbol



AnyRequest = (
    Hello
    | Heartbeat
    | Goodbye
    | Subscribe
    | Unsubscribe
    | GetSnapshot
    | GetContractDetails
    | GetHistoricalBars
    | LeaseClientId
    | ReleaseClientId
    | GetStatus
    | ListNames
    | ForgetName
    # orders and account
    | PlaceOrder
    | ModifyOrder
    | CancelOrder
    | CancelAllOrders
    | GlobalCancel
    | GetOpenOrders
    | GetCompletedOrders
    | GetExecutions
    | GetPositions
    | GetPortfolio
    | GetAccountValues
    | GetAccountSummary
    # what-if orders, PnL (trading)
    | WhatIfOrder
    | GetPnL
    # market data
    | GetHistoricalTicks
    # options and instrument data
    | GetOptionChain
    | CalculateImpliedVolatility
    | CalculateOptionPrice
    | GetMatchingSymbols
    # the lane (ibhub.hub.lane): a local plain-socket fast path beside ZeroMQ
    | LaneTicket
    | LaneAttach
)

# --------------------------------------------------------------------------- replies


class Reply(Struct, frozen=True, tag_field="type", kw_only=True):
    """Base of every reply; ``id`` is the id of the request it answers (0 if unreadable)."""

    id: int


class Ok(Reply, frozen=True, tag="ok"):
    pass


class Error(Reply, frozen=True, tag="error"):
    """A refused or failed request.

    ``code`` is a stable machine-readable word (see ``ErrorCode``); ``message`` says
    what was wrong and what to do; ``ib_code`` is the IB error code when IB refused.
    """

    code: str
    message: str
    ib_code: int = 0


class Welcome(Reply, frozen=True, tag="welcome"):
    lease: str  # the public handle: status, logs, order.<lease> / error.<lease> topics
    client_id: int
    heartbeat_interval: float
    hub_version: str
    protocol: int = PROTOCOL_VERSION
    # The lease's secret: put it in the ``lease`` field of every request. Only this
    # reply carries it; it works only from the connection (and CURVE key) that said hello.
    token: str = ""
    role: str = ""  # the role granted (from the hub's configuration, never the claim)
    # The name's secret, made by the hub for a hello that bound an unbound name without
    # giving one; sent only here, once. Keep it: later hellos with this name need it.
    name_secret: str = ""
    # NATS bridge: this hub process's Ibhub-Epoch header; "" without --nats
    nats_epoch: str = ""
    # The lane (ibhub.hub.lane): "unix:///path/lane.sock" or "tcp://127.0.0.1:PORT" for a
    # local client to attach to with a LaneTicket; "" when the hub has none.
    lane: str = ""
    # The hub publishes every read's tick messages on
    # ``bundle.tick`` too; an SDK with ``tick_bundle=None`` then reads ticks there
    # (False: a hub, or a test double, that does not: per-instrument topics)
    tick_bundle: bool = False
    # The hub pushes ``bundle.tick`` on a lane connection attached with
    # ``LaneAttach(ticks=True)`` (ibhub.hub.lane, "Ticks on the lane")
    lane_ticks: bool = False


class Subscribed(Reply, frozen=True, tag="subscribed"):
    topic: str
    contract: ContractInfo
    subscribers: int


class Snapshot(Reply, frozen=True, tag="snapshot"):
    """Last values: ``events`` holds raw msgpack event payloads in topic order."""

    topics: list[str]
    seqs: list[int]
    events: list[msgspec.Raw]


class ContractDetailsReply(Reply, frozen=True, tag="contract_details"):
    contracts: list[ContractInfo]


class HistoricalBarsReply(Reply, frozen=True, tag="historical_bars"):
    contract: ContractInfo
    bars: list[BarData]


class ClientIdLeased(Reply, frozen=True, tag="client_id_leased"):
    client_id: int
    expires_in: float = 0.0  # seconds; 0 = until released or the owning lease ends
    token: str = ""  # secret: needed to release or renew this raw id


class SubscriptionInfo(Struct, frozen=True):
    topic: str
    con_id: int
    kind: str
    subscribers: int
    ticks: int


class LeaseInfo(Struct, frozen=True):
    lease: str
    name: str
    role: str
    client_id: int
    subscriptions: int
    age_seconds: float
    # recording: what the client last reported in its heartbeat
    gaps: int = 0
    lag_ms: float = 0.0


class NameInfo(Struct, frozen=True):
    """One bound script name: bound by a secret (its hash is kept) or by a CURVE key."""

    name: str
    key: str  # the CURVE key it is bound to ("" when bound by secret only)
    bound_at: float  # epoch seconds
    last_seen: float  # epoch seconds of its last accepted hello
    live: int  # leases open under this name now


class NamesReply(Reply, frozen=True, tag="names"):
    names: list[NameInfo]


class StatusReply(Reply, frozen=True, tag="status"):
    connected: bool
    state: str
    host: str
    port: int
    client_id: int
    server_version: int
    accounts: list[str]
    uptime_seconds: float
    reconnect_count: int
    connected_at: float | None
    last_tick_at: float | None
    leases: list[LeaseInfo]
    subscriptions: list[SubscriptionInfo]
    lines_used: int
    lines_max: int
    raw_client_ids: list[int] = []
    # "allowed", "off" (a data-only hub), or why orders are refused (live guard, read-only)
    trading: str = ""
    # Requests waiting for the upstream budget, per priority (cancel, order, subscription,
    # query): the hub's pacing queue depth.
    upstream_queue: dict[str, int] = {}
    # Client connections per listener ("tws", "rpc", "pub"): open, max, accepted, refused,
    # refusing (1 while a listener refuses new connections); ibhub.hub.limits.
    connections: dict[str, dict[str, int]] = {}
    # Back-pressure (docs/orders.md): seconds a new order would wait for the upstream budget
    # now, and the limit above which it is refused "busy" (0: no order service);
    # requests waiting (with room held for orders being journaled) and the bounds
    # (overall, per lease); requests refused "busy" since start; the longest an order
    # waited for the budget since start (seconds).
    expected_order_delay: float = 0.0
    max_order_delay: float = 0.0
    upstream_queued: int = 0
    upstream_queue_max: int = 0
    upstream_queue_per_lease: int = 0
    busy_refusals: int = 0
    order_wait_max: float = 0.0
    # NATS bridge (ibhub.hub.nats_bridge): state, stream, counters; {} without it
    nats: dict[str, Any] = {}
    # Market depth: depth subscriptions open upstream and IB's budget for them
    # (HubSettings.depth_max, 3 by default as IB gives an account).
    depth_used: int = 0
    depth_max: int = 0


# ------------------------------------------------------------ replies: orders and account


class OrderInfo(Struct, frozen=True):
    """One order as the hub knows it (journal + upstream). ``owner`` is the script name,
    or "external" for orders the hub did not place (TWS by hand, other API clients)."""

    order_id: int
    client_order_id: str
    owner: str
    con_id: int
    symbol: str
    sec_type: str
    currency: str
    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    outside_rth: bool
    account: str
    status: str  # IB status: PendingSubmit, PreSubmitted, Submitted, Filled, Cancelled, ...
    filled: float
    remaining: float
    avg_fill_price: float
    commission: float  # sum over fills; 0.0 until a commission report arrives
    perm_id: int = 0
    parent_id: int = 0
    created_ns: int = 0
    updated_ns: int = 0
    message: str = ""  # last rejection / warning text from IB or the hub
    oca_group: str = ""  # as the script named it (upstream it is prefixed per script)
    oca_type: int = 0
    order_ref: str = ""  # the script's own label (PlaceOrder.order_ref)
    algo_strategy: str = ""
    algo_params: dict[str, str] = {}
    algo_id: str = ""
    # order-type fields (PlaceOrder), as placed
    trailing_amount: float | None = None
    trailing_percent: float | None = None
    trail_stop_price: float | None = None
    limit_price_offset: float | None = None
    peg_offset: float | None = None
    good_till_date: str = ""


class ExecutionInfo(Struct, frozen=True):
    exec_id: str
    order_id: int
    client_order_id: str
    owner: str
    con_id: int
    symbol: str
    side: str  # "BOT" / "SLD"
    shares: float
    price: float
    cum_qty: float
    avg_price: float
    time_ns: int
    account: str
    exchange: str
    commission: float | None  # None until IB's commission report arrives
    commission_currency: str = ""
    realized_pnl: float | None = None
    order_ref: str = ""  # the order's PlaceOrder.order_ref


class PositionInfo(Struct, frozen=True):
    account: str
    con_id: int
    symbol: str
    sec_type: str
    currency: str
    position: float
    avg_cost: float


class PortfolioItem(Struct, frozen=True):
    account: str
    con_id: int
    symbol: str
    sec_type: str
    currency: str
    position: float
    market_price: float
    market_value: float
    avg_cost: float
    unrealized_pnl: float
    realized_pnl: float


class AccountValue(Struct, frozen=True):
    account: str
    key: str  # IB tag: NetLiquidation, BuyingPower, ...
    value: str  # IB sends strings; numeric ones parse with float()
    currency: str


class OrderAccepted(Reply, frozen=True, tag="order_accepted"):
    """The order is journaled and on its way upstream (or already was: ``duplicate``).

    ``duplicate`` is true when the same script already placed this ``client_order_id``:
    nothing new was sent and the existing order is described.
    ``child_order_ids``: the bracket children, in (take_profit, stop_loss) order.
    """

    order_id: int
    client_order_id: str
    status: str
    duplicate: bool = False
    filled: float = 0.0
    remaining: float = 0.0
    avg_fill_price: float = 0.0
    child_order_ids: list[int] = []


class OrderRejected(Reply, frozen=True, tag="order_rejected"):
    """An order request refused by the hub (the Gateway never saw it) or by IB.

    ``reason`` is a stable word from ``RejectReason``; ``message`` says what was wrong and
    what to do; ``order_id`` is set when the refusal concerns an existing order.
    """

    client_order_id: str
    reason: str
    message: str
    order_id: int = 0
    ib_code: int = 0


class CancelRequested(Reply, frozen=True, tag="cancel_requested"):
    """Cancels sent upstream; the outcome arrives as order events."""

    order_ids: list[int]


class OrdersReply(Reply, frozen=True, tag="orders"):
    orders: list[OrderInfo]


class ExecutionsReply(Reply, frozen=True, tag="executions"):
    executions: list[ExecutionInfo]


class PositionsReply(Reply, frozen=True, tag="positions"):
    positions: list[PositionInfo]


class PortfolioReply(Reply, frozen=True, tag="portfolio"):
    items: list[PortfolioItem]


class AccountValuesReply(Reply, frozen=True, tag="account_values"):
    values: list[AccountValue]


class AccountSummaryReply(Reply, frozen=True, tag="account_summary"):
    values: list[AccountValue]


# --- PnL (trading)
class PnLInfo(Struct, frozen=True):
    """IB's pnl (``con_id`` 0: the account) or pnlSingle (one position) figures, in the
    account's currency; NaN where the Gateway sent none. ``daily`` is since the
    Gateway's day start."""

    account: str
    con_id: int
    daily: float
    unrealized: float
    realized: float
    position: float = float("nan")  # positions only
    value: float = float("nan")  # positions only: market value


class PnLReply(Reply, frozen=True, tag="pnl"):
    items: list[PnLInfo]


# --- what-if orders (trading)
class WhatIfReply(Reply, frozen=True, tag="what_if"):
    """IB's orderState for a what-if order: margins before, change and after (in the
    account's currency; None where the Gateway sent none) and the commission estimate."""

    status: str
    init_margin_before: float | None = None
    maint_margin_before: float | None = None
    equity_with_loan_before: float | None = None
    init_margin_change: float | None = None
    maint_margin_change: float | None = None
    equity_with_loan_change: float | None = None
    init_margin_after: float | None = None
    maint_margin_after: float | None = None
    equity_with_loan_after: float | None = None
    commission: float | None = None
    min_commission: float | None = None
    max_commission: float | None = None
    commission_currency: str = ""
    warning_text: str = ""


# ------------------------------------------------------------ replies: market data


class HistoricalTick(Struct, frozen=True, array_like=True):
    """One historical tick: TRADES fill ``price``, ``size``, ``exchange``, ``conditions``;
    BID_ASK ``bid``, ``ask``, ``bid_size``, ``ask_size``; MIDPOINT ``price``. The others
    are NaN / "". ``time``: epoch seconds UTC."""

    time: int
    price: float
    size: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    exchange: str = ""
    conditions: str = ""


class HistoricalTicksReply(Reply, frozen=True, tag="historical_ticks"):
    contract: ContractInfo
    ticks: list[HistoricalTick]


# ------------------------------------------------------------ options and instrument data


class OptionChain(Struct, frozen=True):
    """One exchange's chain of an underlying (IB's securityDefinitionOptionParameter)."""

    exchange: str
    underlying_con_id: int
    trading_class: str
    multiplier: str
    expirations: list[str]  # YYYYMMDD, sorted
    strikes: list[float]  # sorted


class OptionChainReply(Reply, frozen=True, tag="option_chain"):
    underlying: ContractInfo
    chains: list[OptionChain]


class OptionComputation(Struct, frozen=True, array_like=True):
    """IB's option model for one price: implied vol as a fraction, delta and gamma per
    1.0 of the underlying, vega per vol point, theta per day. NaN = IB did not compute
    it. Rides in :attr:`Tick.greeks` (the model greeks) and in calculation replies."""

    implied_vol: float
    delta: float
    opt_price: float
    pv_dividend: float
    gamma: float
    vega: float
    theta: float
    und_price: float


class OptionComputationReply(Reply, frozen=True, tag="option_computation"):
    contract: ContractInfo
    computation: OptionComputation


class SymbolMatch(Struct, frozen=True):
    con_id: int
    symbol: str
    sec_type: str
    primary_exchange: str
    currency: str
    derivative_sec_types: list[str]
    description: str


class MatchingSymbolsReply(Reply, frozen=True, tag="matching_symbols"):
    matches: list[SymbolMatch]


# ------------------------------------------------------------ replies: the lane


class LaneTicketIssued(Reply, frozen=True, tag="lane_ticket"):
    """A single-use ticket for :class:`LaneAttach`, valid ``expires_in`` seconds."""

    ticket: str
    expires_in: float


class LaneAttached(Reply, frozen=True, tag="lane_attached"):
    """The lane connection now counts as the lease's connection (``lease``: its handle)."""

    lease: str



AnyReply = (
    Ok
    | Error
    | Welcome
    | Subscribed
    | Snapshot
    | ContractDetailsReply
    | HistoricalBarsReply
    | ClientIdLeased
    | StatusReply
    | NamesReply
    # orders and account
    | OrderAccepted
    | OrderRejected
    | CancelRequested
    | OrdersReply
    | ExecutionsReply
    | PositionsReply
    | PortfolioReply
    | AccountValuesReply
    | AccountSummaryReply
    # what-if orders, PnL (trading)
    | WhatIfReply
    | PnLReply
    # market data
    | HistoricalTicksReply
    # options and instrument data
    | OptionChainReply
    | OptionComputationReply
    | MatchingSymbolsReply
    # the lane
    | LaneTicketIssued
    | LaneAttached
)


class ErrorCode:
    """Values of ``Error.code``. Stable: clients may branch on them."""

    BAD_REQUEST = "bad_request"  # not msgpack, unknown type, wrong/missing fields
    TOO_LARGE = "too_large"  # request frame above the size limit
    TOO_DEEP = "too_deep"  # request nested deeper than the decoder allows
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_LEASE = "unknown_lease"  # expired, said goodbye, or never existed
    UNKNOWN_CONTRACT = "unknown_contract"
    AMBIGUOUS_CONTRACT = "ambiguous_contract"
    LINE_LIMIT = "line_limit"  # market-data line budget exhausted
    NOT_SUBSCRIBED = "not_subscribed"
    NO_FREE_CLIENT_ID = "no_free_client_id"
    UPSTREAM_DOWN = "upstream_down"
    IB_ERROR = "ib_error"  # IB refused; see ib_code
    TIMEOUT = "timeout"
    BUSY = "busy"  # too many slow requests in progress: retry after a short pause
    FORBIDDEN = "forbidden"
    NAME_TAKEN = "name_taken"  # the script name is bound to another secret or key
    UNKNOWN_NAME = "unknown_name"  # forget_name: no binding for that name
    INTERNAL = "internal"


class RejectReason:
    """Values of ``OrderRejected.reason``. Stable: clients may branch on them."""

    BAD_QUANTITY = "bad_quantity"  # not positive / not finite
    QUANTITY_LIMIT = "quantity_limit"  # above the configured maximum
    BAD_ACTION = "bad_action"
    BAD_ORDER_TYPE = "bad_order_type"
    BAD_TIF = "bad_tif"
    MISSING_LIMIT_PRICE = "missing_limit_price"
    MISSING_STOP_PRICE = "missing_stop_price"
    BAD_PRICE = "bad_price"  # not > 0 / not finite
    PRICE_BAND = "price_band"  # too far from the last price
    BAD_CLIENT_ORDER_ID = "bad_client_order_id"
    CLIENT_ORDER_ID_REUSED = "client_order_id_reused"  # same id, different order
    LIVE_TRADING = "live_trading"  # live port/account without allow_live
    READ_ONLY_HUB = "read_only_hub"
    READ_ONLY_LEASE = "read_only_lease"
    FORBIDDEN = "forbidden"  # needs the operator role
    RATE_LIMIT = "rate_limit"  # per-lease order rate exceeded
    UNKNOWN_LEASE = "unknown_lease"
    UNKNOWN_CONTRACT = "unknown_contract"
    UNKNOWN_ORDER = "unknown_order"
    NOT_OWNER = "not_owner"  # the order belongs to another script
    ORDER_DONE = "order_done"  # already filled/cancelled: cannot modify or cancel
    UPSTREAM_DOWN = "upstream_down"
    IB_REJECTED = "ib_rejected"  # IB refused; see ib_code
    INTERNAL = "internal"
    BAD_ORDER_ATTRIBUTE = "bad_order_attribute"  # oca / algo / order_ref field malformed
    # The hub could not send it to the Gateway within max_order_delay (or the upstream
    # queue, overall or this lease's share, is full): refused at once, nothing journaled
    # or sent; the message gives the expected delay and the limit. Retry later.
    BUSY = "busy"


# --------------------------------------------------------------------------- events
# Published as [topic, payload]. Every event starts with (seq, ts): seq counts per topic
# from 1 and ts is the hub's wall clock in ns when it published the event.


class Event(Struct, frozen=True, tag_field="t", array_like=True):
    seq: int
    ts: int


class Tick(Event, frozen=True, tag="tick"):
    """Top of book after one upstream tick. NaN means "not known yet".

    ``open``/``high``/``low``/``close`` are the session's (``close``: the previous
    session's close), as IB sends them; ``greeks`` is IB's model computation for an
    option (None for anything else, and until the first one came).
    """

    con_id: int
    symbol: str
    bid: float
    ask: float
    last: float
    bid_size: float
    ask_size: float
    last_size: float
    volume: float
    # options and instrument data: appended, with defaults
    open: float = float("nan")
    high: float = float("nan")
    low: float = float("nan")
    close: float = float("nan")
    greeks: OptionComputation | None = None


class Ticks(Event, frozen=True, tag="ticks"):
    """Consecutive ticks of one topic in one message (protocol 2).

    The hub publishes every tick it decoded from one Gateway socket read for an
    instrument as one message: with one tick it sends a plain :class:`Tick`, with
    several a ``Ticks``. ``seq`` is the first tick's sequence number and the ticks
    inside number ``seq, seq + 1, ...`` (apply the sequence rules to each tick);
    ``ts`` is when the hub published the batch, each tick's own ``ts`` when the hub
    decoded it. Batching divides ZeroMQ's per-message cost (a receive, a decode,
    a wake-up) by the batch size on both sides, which is what lets subscriber
    processes keep up at 100k ticks/s (docs/performance.md).
    """

    ticks: list[Tick]


class Bundle(Event, frozen=True, tag="bundle"):
    """Every tick message of one Gateway read, all instruments, as one message (protocol 2).

    Published on ``bundle.tick`` after the read's per-instrument messages:
    ``messages`` holds ``(topic, Tick or Ticks)`` pairs, each exactly what went out on
    that topic. A script that watches most of what the hub streams subscribes to
    this one topic instead of one per instrument and pays one receive, one decode
    and one wake-up per Gateway read instead of one per instrument per read
    (docs/performance.md); it ignores the topics it does not hold. ``seq`` counts
    bundles; each tick keeps its own topic's sequence number, and those are what
    gap detection uses.
    """

    messages: list[tuple[str, Tick | Ticks]]


class Bar(Event, frozen=True, tag="bar"):
    """A 5-second real-time bar; ``time`` is the bar's start, epoch seconds UTC."""

    con_id: int
    symbol: str
    time: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    wap: float
    count: int


class HubStatus(Event, frozen=True, tag="status"):
    """Upstream state change or an event that concerns every client (``hub.status``).

    ``state`` is the upstream state; ``kind`` says what happened: "state" (a state
    change), "ib" (an IB status code such as 1100/1101/1102/2103/2104, in ``code``),
    "resubscribed", "stale" (data stopped while the socket is up), "fresh" (data flows
    again after "stale"), "alert" (e.g. a failed connect attempt).
    """

    state: str
    kind: str
    code: int
    message: str
    reconnect_count: int


class ErrorEvent(Event, frozen=True, tag="error"):
    """An IB error routed to the lease whose request caused it (``error.<lease>``)."""

    lease: str
    ib_code: int
    message: str
    explanation: str
    topic: str = ""


# ------------------------------------------------------------ events: orders and account


class OrderEvent(Event, frozen=True, tag="order"):
    """Something happened to an order (``order.<lease>`` of its owner; ``order.external``).

    ``kind``: "acknowledged" (journaled, sent upstream), "submitted", "partially_filled",
    "filled", "commission" (IB's commission report for fill ``exec_id``), "modified",
    "modify_rejected" (IB refused a modification; the order works on unchanged),
    "cancel_rejected" (IB answered a cancel with an error, 10147 say; ``status`` is
    unchanged and the hub asks the Gateway what is true), "cancelled", "rejected"
    (``message`` says why), "corrected" (reconciliation with the Gateway changed the
    order's state, even after an end: ``status`` is the Gateway's, ``message`` names
    both states). Fill kinds carry the fill in
    ``exec_id`` / ``last_fill_qty`` / ``last_fill_price``; ``commission`` is the order's
    total so far (NaN until the first report).
    """

    kind: str
    order_id: int
    client_order_id: str
    owner: str
    con_id: int
    symbol: str
    action: str
    status: str
    filled: float
    remaining: float
    avg_fill_price: float
    last_fill_qty: float
    last_fill_price: float
    exec_id: str
    commission: float
    message: str


class AccountValueEvent(Event, frozen=True, tag="account_value"):
    """One account value changed (``account.<ACCOUNT>``)."""

    account: str
    key: str
    value: str
    currency: str


class PositionEvent(Event, frozen=True, tag="position"):
    """A position or its valuation changed (``position.<ACCOUNT>``). NaN = not known."""

    account: str
    con_id: int
    symbol: str
    sec_type: str
    currency: str
    position: float
    avg_cost: float
    market_price: float
    market_value: float
    unrealized_pnl: float
    realized_pnl: float


# --- IB news bulletins, published on news.bulletin -------------


class NewsBulletin(Event, frozen=True, tag="bulletin"):
    """An IB news bulletin (``hub.bulletins``): ``msg_type`` 1 regular, 2 exchange
    unavailable, 3 exchange available again; ``exchange`` the one it concerns."""

    msg_id: int
    msg_type: int
    message: str
    exchange: str


# ------------------------------------------------------------ events: market depth


class DepthLevel(Struct, frozen=True, array_like=True):
    """One row of a depth book: price, size and (SMART depth) the exchange it rests on."""

    price: float
    size: float
    market_maker: str = ""


class DepthBook(Event, frozen=True, tag="depth"):
    """An instrument's depth book after one Gateway read (``depth.<instrument>``).

    The whole book (best first, ``HubSettings.depth_rows`` rows a side at most), not the
    row operations: the topic's last value is then a complete book, which a late joiner
    gets first, and a gap costs nothing (the next book replaces it).
    """

    con_id: int
    symbol: str
    bids: list[DepthLevel]
    asks: list[DepthLevel]


class TickByTick(Event, frozen=True, tag="tbt"):
    """One tick-by-tick tick (``tbt.<type>.<instrument>``): ``kind`` is "Last",
    "AllLast" (``price``, ``size``, ``exchange``, ``conditions``), "BidAsk" (``bid``,
    ``ask``, ``bid_size``, ``ask_size``) or "MidPoint" (``price``); fields a kind does
    not carry are NaN / "". ``time`` is IB's, epoch seconds; ``mask`` IB's attribute
    bits (Last: 1 past limit, 2 unreported; BidAsk: 1 bid past low, 2 ask past high).
    """

    con_id: int
    symbol: str
    kind: str
    time: int
    price: float
    size: float
    bid: float
    ask: float
    bid_size: float
    ask_size: float
    mask: int
    exchange: str = ""
    conditions: str = ""


AnyEvent = (
    Tick | Ticks | Bundle | Bar | HubStatus | ErrorEvent | OrderEvent | AccountValueEvent
    | PositionEvent
    | NewsBulletin
    | DepthBook | TickByTick
)

# Topic prefixes (see docs/protocol.md).
TOPIC_TICK = "tick."
TOPIC_BAR = "bar."
TOPIC_DEPTH = "depth."  # depth.<instrument>: DepthBook
TOPIC_TBT = "tbt."  # tbt.<type>.<instrument>: TickByTick, type lower case
TOPIC_HBAR = "hbar."  # hbar.<size>.<what>.<instrument>: keepUpToDate Bar updates
TOPIC_BUNDLE = "bundle.tick"  # every tick topic's messages of one Gateway read
TOPIC_ORDER = "order."
TOPIC_ERROR = "error."
TOPIC_STATUS = "hub.status"
TOPIC_ACCOUNT = "account."  # account.<ACCOUNT>
TOPIC_POSITION = "position."  # position.<ACCOUNT>
TOPIC_NEWS_BULLETIN = "news.bulletin"  # IB news bulletins
ORDER_OWNER_EXTERNAL = "external"  # owner of orders the hub did not place (order.external)


class UpstreamState:
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    RECONNECTING = "RECONNECTING"
    FAILED = "FAILED"

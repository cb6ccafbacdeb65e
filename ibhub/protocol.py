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

import msgspec
from msgspec import Struct

PROTOCOL_VERSION = 1

# --------------------------------------------------------------------------- shared


class ContractSpec(Struct, frozen=True, omit_defaults=True):
    """What a script asks for. Either ``con_id`` alone or a symbol with filters."""

    symbol: str = ""
    sec_type: str = "STK"
    exchange: str = "SMART"
    currency: str = "USD"
    expiry: str = ""  # lastTradeDateOrContractMonth: YYYYMM or YYYYMMDD
    strike: float = 0.0
    right: str = ""  # "C" / "P" for options
    multiplier: str = ""
    con_id: int = 0
    primary_exchange: str = ""
    local_symbol: str = ""
    trading_class: str = ""


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
    name: str
    role: str = "trader"  # "trader" or "readonly"
    protocol: int = PROTOCOL_VERSION


class Heartbeat(Request, frozen=True, tag="heartbeat"):
    lease: str


class Goodbye(Request, frozen=True, tag="goodbye"):
    lease: str


class Subscribe(Request, frozen=True, tag="subscribe"):
    """Stream market data. ``kind``: "ticks" (top of book) or "bars" (5-second real-time bars)."""

    lease: str
    contract: ContractSpec
    kind: str = "ticks"


class Unsubscribe(Request, frozen=True, tag="unsubscribe"):
    lease: str
    topic: str


class GetSnapshot(Request, frozen=True, tag="snapshot"):
    """The last event published on ``topic`` (or on every topic starting with it)."""

    topic: str


class GetContractDetails(Request, frozen=True, tag="contract_details"):
    contract: ContractSpec


class GetHistoricalBars(Request, frozen=True, tag="historical_bars"):
    contract: ContractSpec
    duration: str = "1 D"  # IB duration string: "60 S", "5 D", "2 W", "1 M", "1 Y"
    bar_size: str = "1 hour"  # IB bar size: "1 secs" ... "1 month"
    what_to_show: str = "TRADES"
    use_rth: bool = True
    end: str = ""  # "" = now, else "YYYYMMDD HH:MM:SS UTC"


class LeaseClientId(Request, frozen=True, tag="lease_client_id"):
    """A raw TWS client id for a script that must open its own Gateway connection."""

    name: str
    ttl: float = 0.0  # seconds; 0 = hold until released (or the owning lease expires)
    lease: str = ""  # optional: tie the raw id to this lease's life


class ReleaseClientId(Request, frozen=True, tag="release_client_id"):
    client_id: int


class GetStatus(Request, frozen=True, tag="status"):
    pass


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
    lease: str
    client_id: int
    heartbeat_interval: float
    hub_version: str
    protocol: int = PROTOCOL_VERSION


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
    expires_in: float = 0.0


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
)


class ErrorCode:
    """Values of ``Error.code``. Stable: clients may branch on them."""

    BAD_REQUEST = "bad_request"  # not msgpack, unknown type, wrong/missing fields
    TOO_LARGE = "too_large"  # request frame above the size limit
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
    FORBIDDEN = "forbidden"
    INTERNAL = "internal"


# --------------------------------------------------------------------------- events
# Published as [topic, payload]. Every event starts with (seq, ts): seq counts per topic
# from 1 and ts is the hub's wall clock in ns when it published the event.


class Event(Struct, frozen=True, tag_field="t", array_like=True):
    seq: int
    ts: int


class Tick(Event, frozen=True, tag="tick"):
    """Top of book after one upstream tick. NaN means "not known yet"."""

    con_id: int
    symbol: str
    bid: float
    ask: float
    last: float
    bid_size: float
    ask_size: float
    last_size: float
    volume: float


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
    "resubscribed", "stale" (data stopped while the socket is up), "alert".
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


AnyEvent = Tick | Bar | HubStatus | ErrorEvent

# Topic prefixes (see docs/protocol.md).
TOPIC_TICK = "tick."
TOPIC_BAR = "bar."
TOPIC_ORDER = "order."
TOPIC_ERROR = "error."
TOPIC_STATUS = "hub.status"


class UpstreamState:
    DISCONNECTED = "DISCONNECTED"
    CONNECTING = "CONNECTING"
    CONNECTED = "CONNECTED"
    RECONNECTING = "RECONNECTING"
    FAILED = "FAILED"

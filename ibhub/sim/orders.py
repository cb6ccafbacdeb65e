"""Orders in the simulated Gateway: the placeOrder field walk, order state, fill rules, commissions.

Pure code, no I/O: `broker.py` owns the orders and sends the messages, this module only knows
what an order *is* and when it fills.

The placeOrder walk follows tws-protocol.md §4.1 (server version 176, what ib_insync 0.9.86 and
ib_async 2.1 send). Everything variable-length (combo legs, delta-neutral block, scale block,
hedge param, delta-neutral contract, algo params, PEG BENCH block, conditions) is walked exactly,
because `whatIf` sits behind all of it: a walk that drifts by one field would read the wrong flag.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from ibhub.tws.codec import UNSET_DOUBLE

# Number of fields an order condition occupies on the wire, including its leading type field
# (ib_insync order.py: PriceCondition, TimeCondition, MarginCondition, ExecutionCondition,
# VolumeCondition, PercentChangeCondition).
_CONDITION_WIDTH = {1: 7, 3: 4, 4: 4, 5: 5, 6: 6, 7: 6}

SUPPORTED_ORDER_TYPES = frozenset({
    "MKT", "LMT", "STP", "STP LMT", "TRAIL", "TRAIL LIMIT", "MIT", "LIT", "MOC", "LOC", "REL",
    "MIDPRICE",
})  # fmt: skip
#: order types that trade only in the closing auction (`Broker.closing_auction`)
AT_CLOSE = frozenset({"MOC", "LOC"})
#: order types whose trigger or peg moves with the market: checked on every quote
_MOVING = frozenset({"TRAIL", "TRAIL LIMIT", "MIT", "LIT", "REL", "MIDPRICE"})


class OrderParseError(ValueError):
    """A placeOrder message that does not follow the sv176 field walk."""


class Status(enum.StrEnum):
    """IB order statuses (orderStatus field 2)."""

    PENDING_SUBMIT = "PendingSubmit"
    PRE_SUBMITTED = "PreSubmitted"
    SUBMITTED = "Submitted"
    CANCELLED = "Cancelled"
    API_CANCELLED = "ApiCancelled"
    FILLED = "Filled"
    INACTIVE = "Inactive"


DONE_STATUSES = frozenset({Status.CANCELLED, Status.API_CANCELLED, Status.FILLED, Status.INACTIVE})


@dataclass(frozen=True)
class OrderRequest:
    """The parts of a placeOrder message the simulator acts on or echoes back."""

    order_id: int
    c12: tuple[str, ...]
    action: str
    total_qty: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    oca_group: str
    account: str
    open_close: str
    origin: int
    order_ref: str
    transmit: bool
    parent_id: int
    outside_rth: bool
    hidden: bool
    display_size: int
    trigger_method: int
    good_after_time: str
    good_till_date: str
    oca_type: int
    algo_strategy: str
    what_if: bool
    trail_stop_price: float | None = None
    trailing_percent: float | None = None
    algo_params: tuple[tuple[str, str], ...] = ()
    algo_id: str = ""
    lmt_price_offset: float | None = None  # TRAIL LIMIT: limit = stop -/+ offset
    # every field the walk read by name, as sent: (name, raw text); variable blocks
    # appear as their count ("comboLegs", "conditions", "algoParams", ...)
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def exchange(self) -> str:
        return self.c12[7]


class _Cursor:
    """Reads fields left to right; running out of fields is a parse error, never an IndexError.

    Every field read by name is kept in ``seen`` (name -> raw text), so a reader of the
    request (the hub's front door) can tell which attributes a client set."""

    def __init__(self, fields: Sequence[str], start: int) -> None:
        self._fields = fields
        self.pos = start
        self.seen: dict[str, str] = {}

    def take(self, what: str) -> str:
        if self.pos >= len(self._fields):
            raise OrderParseError(f"placeOrder ends before field {self.pos} ({what})")
        value = self._fields[self.pos]
        self.pos += 1
        self.seen[what] = value
        return value

    def named(self, *names: str) -> None:
        """Read one field per name (kept in ``seen``)."""
        for name in names:
            self.take(name)

    def skip(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self._fields):
            raise OrderParseError(f"placeOrder too short for {n} {what} fields at {self.pos}")
        self.pos += n

    def count(self, what: str) -> int:
        return _int(self.take(what), what)

    def remaining(self) -> int:
        return len(self._fields) - self.pos


def _int(text: str, what: str, default: int = 0) -> int:
    if text == "":
        return default
    try:
        return int(float(text)) if "." in text else int(text)
    except ValueError:
        raise OrderParseError(f"{what} is not an integer: {text!r}") from None


def _float(text: str, what: str) -> float | None:
    """'' and UNSET_DOUBLE both mean unset."""
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise OrderParseError(f"{what} is not a number: {text!r}") from None
    if value >= UNSET_DOUBLE or value != value:
        return None
    return value


def _bool(text: str) -> bool:
    return text not in ("", "0", "false", "False")


# The fixed tail after the conditions (§4.1 step 9), then the fields newer server
# versions add (step 10); the latter are read when present.
_ADJUSTED_TAIL = (
    "adjustedOrderType", "triggerPrice", "lmtPriceOffset", "adjustedStopPrice",
    "adjustedStopLimitPrice", "adjustedTrailingAmount", "adjustableTrailingUnit", "extOperator",
    "softDollarTier.name", "softDollarTier.val", "cashQty", "mifid2DecisionMaker",
    "mifid2DecisionAlgo", "mifid2ExecutionTrader", "mifid2ExecutionAlgo",
    "dontUseAutoPriceForHedge", "isOmsContainer", "discretionaryUpToLimitPrice",
    "usePriceMgmtAlgo",
)  # fmt: skip
_VERSION_TAIL = ("duration", "postToAts", "autoCancelParent", "advancedErrorOverride",
                 "manualOrderTime")  # fmt: skip


def parse_place_order(fields: Sequence[str]) -> OrderRequest:
    """Walk a placeOrder message (fields[0] == '3') at server version 176 (§4.1)."""
    if len(fields) < 35:
        raise OrderParseError(f"placeOrder has {len(fields)} fields, needs at least 35")
    order_id = _int(fields[1], "orderId")
    c12 = tuple(fields[2:14])
    cur = _Cursor(fields, 14)
    cur.named("secIdType", "secId")
    action = cur.take("action").upper()
    qty_text = cur.take("totalQuantity")
    total_qty = _float(qty_text, "totalQuantity")
    order_type = cur.take("orderType").upper()
    lmt_price = _float(cur.take("lmtPrice"), "lmtPrice")
    aux_price = _float(cur.take("auxPrice"), "auxPrice")
    tif = cur.take("tif")
    oca_group = cur.take("ocaGroup")
    account = cur.take("account")
    open_close = cur.take("openClose")
    origin = _int(cur.take("origin"), "origin")
    order_ref = cur.take("orderRef")
    transmit = _bool(cur.take("transmit"))
    parent_id = _int(cur.take("parentId"), "parentId")
    cur.named("blockOrder", "sweepToFill")
    display_size = _int(cur.take("displaySize"), "displaySize")
    trigger_method = _int(cur.take("triggerMethod"), "triggerMethod")
    outside_rth = _bool(cur.take("outsideRth"))
    hidden = _bool(cur.take("hidden"))

    if c12[2].upper() == "BAG":
        legs = cur.count("comboLegs")
        cur.skip(8 * legs, "combo leg")
        cur.skip(cur.count("orderComboLegs"), "order combo leg")
        cur.skip(2 * cur.count("smartComboRoutingParams"), "routing param")

    # 2: '', discretionaryAmt, goodAfterTime, goodTillDate, then 4 fa fields (faProfile at 176)
    cur.named("sharesAllocation", "discretionaryAmt")
    good_after_time = cur.take("goodAfterTime")
    good_till_date = cur.take("goodTillDate")
    cur.named("faGroup", "faMethod", "faPercentage", "faProfile")
    # 3: modelCode .. deltaNeutralAuxPrice (24 fields); ocaType is the 5th
    cur.named("modelCode", "shortSaleSlot", "designatedLocation", "exemptCode")
    oca_type = _int(cur.take("ocaType"), "ocaType")
    cur.named(
        "rule80A", "settlingFirm", "allOrNone", "minQty", "percentOffset", "eTradeOnly",
        "firmQuoteOnly", "nbboPriceCap", "auctionStrategy", "startingPrice", "stockRefPrice",
        "delta", "stockRangeLower", "stockRangeUpper", "overridePercentageConstraints",
        "volatility", "volatilityType",
    )  # fmt: skip
    delta_neutral_type = cur.take("deltaNeutralOrderType")
    cur.named("deltaNeutralAuxPrice")
    if delta_neutral_type:
        cur.skip(8, "delta-neutral")
    # 4: continuousUpdate .. scalePriceIncrement
    cur.named("continuousUpdate", "referencePriceType")
    trail_stop_price = _float(cur.take("trailStopPrice"), "trailStopPrice")
    trailing_percent = _float(cur.take("trailingPercent"), "trailingPercent")
    cur.named("scaleInitLevelSize", "scaleSubsLevelSize")
    increment = _float(cur.take("scalePriceIncrement"), "scalePriceIncrement")
    if increment is not None and increment > 0:
        cur.skip(7, "scale")
    # 5: scaleTable, activeStartTime, activeStopTime, hedgeType [hedgeParam]
    cur.named("scaleTable", "activeStartTime", "activeStopTime")
    if cur.take("hedgeType"):
        cur.named("hedgeParam")
    # 6: optOutSmartRouting, clearingAccount, clearingIntent, notHeld, dncFlag [3]
    cur.named("optOutSmartRouting", "clearingAccount", "clearingIntent", "notHeld")
    if _bool(cur.take("deltaNeutralContract")):
        cur.skip(3, "deltaNeutralContract")
    # 7: algoStrategy [n, 2n]
    algo_strategy = cur.take("algoStrategy")
    algo_params: list[tuple[str, str]] = []
    if algo_strategy:
        for _ in range(cur.count("algoParams")):
            tag = cur.take("algoParams tag")
            algo_params.append((tag, cur.take("algoParams value")))
    # 8: algoId, whatIf, orderMiscOptions, solicited, randomizeSize, randomizePrice [PEG BENCH 5]
    algo_id = cur.take("algoId")
    what_if = _bool(cur.take("whatIf"))
    cur.named("orderMiscOptions", "solicited", "randomizeSize", "randomizePrice")
    if order_type == "PEG BENCH":
        cur.skip(5, "PEG BENCH")
    # 9: conditions, then the adjusted-order / mifid2 block
    n_conditions = cur.count("conditions")
    for _ in range(n_conditions):
        cond_type = _int(cur.take("condition type"), "condition type")
        del cur.seen["condition type"]  # "conditions" (the count) names the attribute
        width = _CONDITION_WIDTH.get(cond_type)
        if width is None:
            raise OrderParseError(f"unknown order condition type {cond_type}")
        cur.skip(width - 1, "condition")
    if n_conditions:
        cur.named("conditionsIgnoreRth", "conditionsCancelOrder")
    if cur.remaining() < len(_ADJUSTED_TAIL):
        raise OrderParseError("placeOrder ends inside the adjusted-order/mifid2 block")
    cur.named(*_ADJUSTED_TAIL)
    lmt_price_offset = _float(cur.seen["lmtPriceOffset"], "lmtPriceOffset")
    # 10: fields of later server versions, as far as the client sent them
    for name in _VERSION_TAIL:
        if cur.remaining() == 0:
            break
        cur.take(name)
    if cur.remaining():
        cur.seen["minTradeQty/PEG BEST/PEG MID"] = "|".join(fields[cur.pos :])

    if total_qty is None:
        raise OrderParseError(f"totalQuantity is missing ({qty_text!r})")
    return OrderRequest(
        order_id=order_id, c12=c12, action=action, total_qty=total_qty, order_type=order_type,
        lmt_price=lmt_price, aux_price=aux_price, tif=tif, oca_group=oca_group, account=account,
        open_close=open_close, origin=origin, order_ref=order_ref, transmit=transmit,
        parent_id=parent_id, outside_rth=outside_rth, hidden=hidden, display_size=display_size,
        trigger_method=trigger_method, good_after_time=good_after_time,
        good_till_date=good_till_date, oca_type=oca_type, algo_strategy=algo_strategy,
        what_if=what_if, trail_stop_price=trail_stop_price, trailing_percent=trailing_percent,
        algo_params=tuple(algo_params), algo_id=algo_id, lmt_price_offset=lmt_price_offset,
        attributes=tuple(cur.seen.items()),
    )


def check_order(req: OrderRequest) -> str | None:
    """Why IB would refuse this order (the text after 'reason:'), or None if it is acceptable."""
    otype = req.order_type
    if req.action not in ("BUY", "SELL"):
        return f"Invalid action {req.action!r}; use BUY or SELL"
    if otype in ("LMT", "STP LMT", "LIT", "LOC") and req.lmt_price is None:
        return f"{otype} order needs a limit price"
    if otype in ("STP", "STP LMT") and req.aux_price is None:
        return f"{otype} order needs a stop price (auxPrice)"
    if otype in ("MIT", "LIT") and req.aux_price is None:
        return f"{otype} order needs a trigger price (auxPrice)"
    if req.lmt_price is not None and req.lmt_price <= 0 and otype in ("LMT", "STP LMT", "LIT",
                                                                        "LOC"):
        return f"Limit price must be positive, got {req.lmt_price}"
    if otype in ("TRAIL", "TRAIL LIMIT"):
        if (req.aux_price is None) == (req.trailing_percent is None):
            return (f"{otype} order needs either a trailing amount (auxPrice) or a "
                    "trailingPercent, not both")
        if otype == "TRAIL LIMIT" and req.lmt_price_offset is None and (
                req.lmt_price is None or req.trail_stop_price is None):
            return ("TRAIL LIMIT order needs a lmtPriceOffset, or a limit price with an "
                    "initial trailStopPrice")
    if otype == "REL" and req.aux_price is not None and req.aux_price < 0:
        return f"REL offset (auxPrice) must not be negative, got {req.aux_price}"
    if req.tif == "GTD" and not req.good_till_date:
        return "a GTD order needs a goodTillDate"
    return None


@dataclass
class SimOrder:
    """One order as the simulated Gateway keeps it (mutable; owned by the Broker)."""

    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    symbol: str
    action: str
    total_qty: float
    order_type: str
    lmt_price: float | None
    aux_price: float | None
    tif: str
    status: str
    filled: float = 0.0
    avg_fill_price: float = 0.0
    order_ref: str = ""
    account: str = ""
    oca_group: str = ""
    parent_id: int = 0
    transmit: bool = True
    outside_rth: bool = False
    last_fill_price: float = 0.0
    stop_triggered: bool = False
    trail_stop: float | None = None  # current stop of a TRAIL order
    trailing_percent: float | None = None
    trail_limit: float | None = None  # TRAIL LIMIT: limit price once its stop triggered
    commission: float = 0.0  # charged so far (IB's minimum applies per order)
    why_held: str = ""
    completed_time: str = ""
    completed_status: str = ""
    request: OrderRequest | None = field(default=None, repr=False)
    oca_type: int = 0
    algo_strategy: str = ""
    algo_params: tuple[tuple[str, str], ...] = ()

    @property
    def remaining(self) -> float:
        return max(self.total_qty - self.filled, 0.0)

    @property
    def is_done(self) -> bool:
        return self.status in DONE_STATUSES

    @property
    def is_working(self) -> bool:
        """Live at the simulated exchange: may fill on the next quote."""
        return self.status == Status.SUBMITTED

    @property
    def side(self) -> str:
        return "BOT" if self.action == "BUY" else "SLD"

    @property
    def sign(self) -> int:
        return 1 if self.action == "BUY" else -1


@dataclass(frozen=True)
class SimExecution:
    """One fill. `time` is UTC; commission is in USD."""

    exec_id: str
    order_id: int
    client_id: int
    perm_id: int
    con_id: int
    account: str
    side: str
    shares: float
    price: float
    time: datetime
    cum_qty: float
    avg_price: float
    order_ref: str
    commission: float
    realized_pnl: float | None
    exchange: str


def fill_price(
    order: SimOrder, bid: float, ask: float, last: float, arriving: bool
) -> float | None:
    """The price at which `order` fills against this quote, or None if it does not fill.

    Rules (documented in docs/simulator.md): MKT fills at the touch (buy at the ask, sell at the
    bid). A LMT that is marketable on arrival fills at the touch (price improvement, like a real
    marketable limit); a resting LMT fills at its limit once the touch reaches it, because a random
    walk that jumps through the limit would have traded there first. STP and STP LMT trigger on
    the last price (IB's default trigger for most products); a triggered STP is a MKT, a
    triggered STP LMT a LMT; a TRAIL is a STP whose stop follows the last price (`_trail`), a
    TRAIL LIMIT a STP LMT whose limit is its stop less (buy: plus) lmtPriceOffset. MIT and LIT
    trigger the other way (a buy when the last falls to the trigger: "if touched") and then are
    a MKT / LMT. REL and MIDPRICE are pegs (`_peg_price`). MOC and LOC never trade here: only
    in the closing auction. Mutates `order.stop_triggered` (and a trail's stop and limit).
    """
    buy = order.action == "BUY"
    otype = order.order_type
    if otype in AT_CLOSE:
        return None
    if otype in ("TRAIL", "TRAIL LIMIT") and not order.stop_triggered:
        if not _trail(order, last, buy):
            return None
        arriving = True
    elif otype in ("STP", "STP LMT", "MIT", "LIT") and not order.stop_triggered:
        trigger = order.aux_price
        if trigger is None:
            return None
        stop_like = otype in ("STP", "STP LMT")
        if (buy == stop_like and last >= trigger) or (buy != stop_like and last <= trigger):
            order.stop_triggered = True
            arriving = True  # the triggered child order arrives at the market now
        else:
            return None
    if otype in ("REL", "MIDPRICE"):
        return _peg_fill(order, bid, ask, last, buy)
    touch = ask if buy else bid
    if touch <= 0:
        return None
    if otype in ("MKT", "STP", "TRAIL", "MIT"):
        return touch
    limit = order.trail_limit if otype == "TRAIL LIMIT" else order.lmt_price
    if limit is None:
        return None
    crossed = touch <= limit if buy else touch >= limit
    if not crossed:
        return None
    # the remainder of a partly filled order is already through the market: it takes the touch
    return touch if arriving or order.filled > 0 else limit


def _peg_fill(order: SimOrder, bid: float, ask: float, last: float, buy: bool) -> float | None:
    """REL (pegged to primary): a buy rests at bid + offset (a sell at ask - offset), never
    beyond its cap (lmtPrice), and fills there when the last trades at or through it.
    MIDPRICE rests at the midpoint, capped by lmtPrice, and fills there at once (IB routes it
    to where the midpoint trades); with the midpoint beyond the cap it waits."""
    if bid <= 0 or ask <= 0:
        return None
    cap = order.lmt_price
    if order.order_type == "MIDPRICE":
        peg = (bid + ask) / 2.0
        if cap is not None and (peg > cap if buy else peg < cap):
            return None
        return round(peg, 6)
    offset = order.aux_price or 0.0
    peg = bid + offset if buy else ask - offset
    if cap is not None:
        peg = min(peg, cap) if buy else max(peg, cap)
    if (buy and last <= peg) or (not buy and last >= peg):
        return round(peg, 6)
    return None


def close_fill_price(order: SimOrder, close: float) -> float | None:
    """The closing auction: a MOC fills at the close, a LOC only if the close is at or
    better than its limit (else it is cancelled with the auction)."""
    if order.order_type == "MOC":
        return close
    limit = order.lmt_price
    if limit is None:
        return None
    buy = order.action == "BUY"
    return close if (close <= limit if buy else close >= limit) else None


def _trail(order: SimOrder, last: float, buy: bool) -> bool:
    """Move a TRAIL order's stop with the last price; True once the stop is hit.

    A sell trail's stop sits `amount` below the highest last seen (a buy trail's above the
    lowest); `amount` is auxPrice, or trailingPercent of the last price. A TRAIL LIMIT's
    limit is set from the stop when it triggers (stop -/+ lmtPriceOffset).
    """
    if order.aux_price is not None:
        amount = order.aux_price
    elif order.trailing_percent is not None:
        amount = last * order.trailing_percent / 100.0
    else:
        return False
    stop = order.trail_stop
    if stop is not None and ((buy and last >= stop) or (not buy and last <= stop)):
        order.stop_triggered = True
        if order.order_type == "TRAIL LIMIT":
            req = order.request
            offset = req.lmt_price_offset if req is not None else None
            if offset is None:  # lmtPrice given with the initial stop: keep their distance
                first = req.trail_stop_price if req is not None else None
                offset = abs(first - order.lmt_price) if (
                    first is not None and order.lmt_price is not None) else 0.0
            order.trail_limit = stop + offset if buy else stop - offset
        return True
    candidate = last + amount if buy else last - amount
    if stop is None:
        stop = candidate
    order.trail_stop = min(stop, candidate) if buy else max(stop, candidate)
    return False


class RestingBook:
    """The working orders of one instrument and the price levels that could fill them.

    The broker asks it on every step of the instrument's walk; a step that reaches no level
    costs O(1), so thousands of resting orders do not slow the market down. Levels are
    recomputed lazily after any change (`touch()`); TRAIL orders move with every step and
    are always handed out.
    """

    def __init__(self) -> None:
        self.orders: dict[int, SimOrder] = {}
        self._dirty = True
        self._buy_limit = -math.inf
        self._sell_limit = math.inf
        self._buy_stop = math.inf
        self._sell_stop = -math.inf
        self._trails = False

    def __len__(self) -> int:
        return len(self.orders)

    def add(self, order: SimOrder) -> None:
        self.orders[order.perm_id] = order
        self._dirty = True

    def discard(self, perm_id: int) -> bool:
        """Remove an order; True if it was here."""
        self._dirty = True
        return self.orders.pop(perm_id, None) is not None

    def touch(self) -> None:
        """An order's prices or trigger state changed."""
        self._dirty = True

    def _levels(self) -> None:
        self._buy_limit, self._sell_limit = -math.inf, math.inf
        self._buy_stop, self._sell_stop = math.inf, -math.inf
        self._trails = False
        for o in self.orders.values():
            buy = o.action == "BUY"
            if o.order_type in AT_CLOSE:
                continue  # the closing auction fills these, never a quote
            if o.order_type in _MOVING or (o.order_type in ("MKT", "STP") and o.stop_triggered):
                self._trails = True  # moves (or fills) on every step: always a candidate
            elif o.order_type in ("STP", "STP LMT") and not o.stop_triggered:
                if o.aux_price is not None:
                    if buy:
                        self._buy_stop = min(self._buy_stop, o.aux_price)
                    else:
                        self._sell_stop = max(self._sell_stop, o.aux_price)
            elif o.lmt_price is not None:
                if buy:
                    self._buy_limit = max(self._buy_limit, o.lmt_price)
                else:
                    self._sell_limit = min(self._sell_limit, o.lmt_price)
            else:
                self._trails = True
        self._dirty = False

    def candidates(self, bid: float, ask: float, last: float) -> list[SimOrder]:
        """Orders this quote may fill or trigger, oldest first ([] in the common case)."""
        if not self.orders:
            return []
        if self._dirty:
            self._levels()
        if not (self._trails or ask <= self._buy_limit or bid >= self._sell_limit
                or last >= self._buy_stop or last <= self._sell_stop):
            return []
        self._dirty = True  # triggers and trails change state while being checked
        return [self.orders[p] for p in sorted(self.orders)]


# Commission schedule modelled on IBKR Pro "fixed" pricing (docs/simulator.md).
STOCK_PER_SHARE = 0.005
STOCK_MIN = 1.00
STOCK_MAX_PCT = 0.01
FUTURE_PER_CONTRACT = 0.85
OPTION_PER_CONTRACT = 0.65
OPTION_MIN = 1.00
FX_RATE = 0.00002
FX_MIN = 2.00


def commission_for(sec_type: str, shares: float, price: float, multiplier: float) -> float:
    """Commission in USD for one execution of `shares` at `price`."""
    qty = abs(shares)
    if sec_type == "FUT":
        fee = FUTURE_PER_CONTRACT * qty
    elif sec_type in ("OPT", "FOP"):
        fee = max(OPTION_PER_CONTRACT * qty, OPTION_MIN)
    elif sec_type == "CASH":
        fee = max(FX_RATE * qty * price, FX_MIN)
    else:
        # $0.005/share, at least $1.00, at most 1% of the trade value (the cap wins over the floor)
        value = qty * price * multiplier
        fee = max(STOCK_PER_SHARE * qty, STOCK_MIN)
        if value > 0:
            fee = min(fee, STOCK_MAX_PCT * value)
    return round(fee, 4)

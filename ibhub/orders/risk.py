"""Pre-trade checks: everything an order must pass before anything goes upstream.

Pure validation with no I/O, so every rule is unit-testable and an order refused here
never reaches the Gateway. Each refusal is a :class:`Refusal` carrying a stable reason
code (``protocol.RejectReason``) and a message that names the problem and the fix.

Decisions:

* **Live-trading guard.** A live upstream (port 7496/4001, or any managed account that
  is not a paper account, i.e. not starting with "DU"/"DF") refuses every new order
  unless ``allow_live`` is set. Cancels are never blocked: they only reduce risk.
* **Read-only hub / read-only lease** refuse placing and modifying; cancels of one's own
  orders stay allowed on a read-only hub for the same reason.
* **Price band.** A priced order more than ``price_band_pct`` away from the last price is
  refused (fat-finger guard). With no last price known the band cannot be applied; the
  order passes unless ``require_reference_price`` is set (then it is refused).
* **Per-lease rate limit** is a token bucket consumed only by orders that pass every
  other check, so a script fixing a typo is not also rate-limited for it.
* **Quantity rules per security type** (:func:`quantity_refusal`), for new orders and
  modifications alike: stocks (STK) in whole shares, unless ``fractional_shares`` is
  set (then at least ``MIN_FRACTIONAL_SHARES``); futures, options, futures options,
  warrants and combos (FUT, OPT, FOP, WAR, IOPT, BAG) in whole contracts >= 1; FX
  (CASH) at least ``min_fx_quantity`` units of the base currency (default 1; IB sends
  orders below its IdealPro minimum as odd lots, so the hub does not refuse those). Other
  types must be positive and finite. A quantity like 1e-9 or 0.5 shares is a bug in the
  script, never an order anyone meant.
* **Maximum quantity per security type**: ``max_quantity_by_sec_type`` (default: CASH
  1,000,000 units, so a standard 25,000 EUR.USD order passes), else ``max_quantity``
  (default 10,000) for every other type. The type is the resolved contract's; before
  the contract is resolved the request's own ``sec_type`` is used only when it names no
  ``con_id`` (a bare con_id names any type, whatever the spec's default says).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

from ibhub.orders import order_types
from ibhub.protocol import (
    MAX_ALGO_PARAMS,
    MAX_CLIENT_ORDER_ID,
    ModifyOrder,
    PlaceOrder,
    RejectReason,
)

ACTIONS: Final = frozenset({"BUY", "SELL"})
ORDER_TYPES: Final = frozenset(order_types.ORDER_TYPES)
TIFS: Final = order_types.TIFS
LIVE_PORTS: Final = frozenset({7496, 4001})
PAPER_PREFIXES: Final = ("DU", "DF")
#: security types traded in whole units (contracts, or combos of them)
WHOLE_CONTRACTS: Final = frozenset({"FUT", "OPT", "FOP", "WAR", "IOPT", "BAG"})
#: the smallest stock order with fractional_shares set (IB trades fractions to 1e-4)
MIN_FRACTIONAL_SHARES: Final = 0.0001
#: per product class maxima that differ from max_quantity (10,000, the stocks' cap): FX is
#: counted in currency units (a standard 25,000 EUR order passes); futures and options in
#: contracts, where 10,000 would be an absurd order (500 ES contracts are ~$150M notional)
DEFAULT_MAX_BY_SEC_TYPE: Final[dict[str, float]] = {
    "CASH": 1_000_000.0, "FUT": 500.0, "FOP": 500.0, "OPT": 1_000.0}
_WHOLE_TOLERANCE: Final = 1e-9


class Role:
    READONLY = "readonly"
    TRADER = "trader"
    OPERATOR = "operator"  # a trader that may also global-cancel and see every order

    ALL: Final = frozenset({READONLY, TRADER, OPERATOR})


@dataclass(frozen=True)
class Refusal:
    reason: str  # a RejectReason value
    message: str


@dataclass(frozen=True)
class RiskLimits:
    max_quantity: float = 10_000.0  # every security type without its own maximum
    price_band_pct: float = 10.0  # 0 disables the band
    allow_live: bool = False
    read_only: bool = False
    order_rate: float = 20.0  # orders per second per lease (token refill); 0 disables
    order_burst: float = 50.0  # bucket size: orders a lease may place at once
    require_reference_price: bool = False
    # sec_type -> maximum order quantity (upper-case keys), overriding max_quantity
    max_quantity_by_sec_type: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_MAX_BY_SEC_TYPE)
    )
    fractional_shares: bool = False  # STK orders may be fractional (IB account permission)
    min_fx_quantity: float = 1.0  # smallest CASH order, in units of the base currency

    def __post_init__(self) -> None:
        if not (self.max_quantity > 0 and math.isfinite(self.max_quantity)):
            raise ValueError(f"max_quantity must be a positive number, not {self.max_quantity}")
        for sec_type, value in self.max_quantity_by_sec_type.items():
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(
                    f"max_quantity_by_sec_type[{sec_type!r}] must be a positive number, not {value}"
                )
        if not (self.min_fx_quantity > 0 and math.isfinite(self.min_fx_quantity)):
            raise ValueError(
                f"min_fx_quantity must be a positive number, not {self.min_fx_quantity}"
            )
        if not (0 <= self.price_band_pct < 1000):
            raise ValueError(f"price_band_pct must be in [0, 1000), not {self.price_band_pct}")
        if self.order_rate < 0 or self.order_burst < 1:
            raise ValueError("order_rate must be >= 0 and order_burst >= 1")

    def max_quantity_for(self, sec_type: str) -> tuple[float, str]:
        """The maximum order quantity for ``sec_type`` and the setting it comes from."""
        own = self.max_quantity_by_sec_type.get(sec_type.upper()) if sec_type else None
        if own is not None:
            return own, f"max_quantity_by_sec_type[{sec_type.upper()}]"
        return self.max_quantity, "max_quantity"


@dataclass(frozen=True)
class OrderParams:
    """The risk-relevant part of an order (a new one, or an existing one after a modify)."""

    action: str
    quantity: float
    order_type: str
    limit_price: float | None
    stop_price: float | None
    tif: str
    take_profit: float | None = None
    stop_loss: float | None = None
    sec_type: str = ""  # "" = not known yet: only the rules every type shares apply
    stop_loss_limit: float | None = None  # a bracket's STP LMT stop-loss leg

    @classmethod
    def of(cls, req: PlaceOrder, sec_type: str = "") -> OrderParams:
        """``sec_type``: the resolved contract's; "" takes the request's own, unless
        the request names a con_id (whose spec's sec_type may be just the default)."""
        if not sec_type and not req.contract.con_id:
            sec_type = req.contract.sec_type
        return cls(
            req.action,
            req.quantity,
            req.order_type,
            req.limit_price,
            req.stop_price,
            req.tif,
            req.take_profit,
            req.stop_loss,
            sec_type,
            req.stop_loss_limit,
        )

    def modified(self, req: ModifyOrder) -> OrderParams:
        return OrderParams(
            self.action,
            self.quantity if req.quantity is None else req.quantity,
            self.order_type,
            self.limit_price if req.limit_price is None else req.limit_price,
            self.stop_price if req.stop_price is None else req.stop_price,
            self.tif if req.tif is None else req.tif,
            sec_type=self.sec_type,
        )


# --------------------------------------------------------------------------- pure checks


def is_paper_account(account: str) -> bool:
    return account.upper().startswith(PAPER_PREFIXES)


def live_reason(port: int, accounts: Sequence[str]) -> str | None:
    """Why the upstream counts as live trading, or None for a paper upstream."""
    if port in LIVE_PORTS:
        return f"the Gateway port {port} is a live-trading port (7496 TWS, 4001 Gateway)"
    live = [a for a in accounts if not is_paper_account(a)]
    if live:
        return f"account(s) {', '.join(live)} are not paper accounts (paper ids start DU/DF)"
    return None


def check_client_order_id(client_order_id: str) -> Refusal | None:
    if not client_order_id or len(client_order_id) > MAX_CLIENT_ORDER_ID:
        return Refusal(
            RejectReason.BAD_CLIENT_ORDER_ID,
            f"client_order_id must be 1..{MAX_CLIENT_ORDER_ID} characters "
            f"(got {len(client_order_id)}); choose a unique id per order and reuse it on retry",
        )
    if not client_order_id.isprintable():
        return Refusal(
            RejectReason.BAD_CLIENT_ORDER_ID, "client_order_id contains non-printable characters"
        )
    return None


def quantity_refusal(quantity: float, sec_type: str, limits: RiskLimits) -> Refusal | None:
    """The quantity rules of ``sec_type`` ("" = unknown: positive and finite only) and
    its maximum; the refusal names the rule broken."""
    if not (math.isfinite(quantity) and quantity > 0):
        return Refusal(RejectReason.BAD_QUANTITY, f"quantity must be > 0, got {quantity}")
    kind = sec_type.upper()
    whole = abs(quantity - round(quantity)) <= _WHOLE_TOLERANCE
    if kind == "STK" and limits.fractional_shares:
        if quantity < MIN_FRACTIONAL_SHARES:
            return Refusal(
                RejectReason.BAD_QUANTITY,
                f"quantity {quantity:g} is below the smallest fractional stock order "
                f"{MIN_FRACTIONAL_SHARES:g} shares",
            )
    elif kind == "STK" and not (whole and quantity >= 1):
        return Refusal(
            RejectReason.BAD_QUANTITY,
            f"quantity {quantity:g}: stocks trade in whole shares (>= 1) on this hub; "
            "fractional shares need fractional_shares = true (and IB's permission)",
        )
    elif kind in WHOLE_CONTRACTS and not (whole and quantity >= 1):
        return Refusal(
            RejectReason.BAD_QUANTITY,
            f"quantity {quantity:g}: {kind} orders are in whole contracts (>= 1)",
        )
    elif kind == "CASH" and quantity < limits.min_fx_quantity:
        return Refusal(
            RejectReason.BAD_QUANTITY,
            f"quantity {quantity:g}: FX (CASH) orders are at least {limits.min_fx_quantity:g} "
            "units of the base currency (min_fx_quantity)",
        )
    if kind:
        maximum, setting = limits.max_quantity_for(kind)
    else:  # type unknown until the contract resolves: only the largest maximum applies
        maximum = max(limits.max_quantity, *limits.max_quantity_by_sec_type.values())
        setting = "max_quantity"
    if quantity > maximum:
        what = f"{kind} orders" if kind else "orders"
        return Refusal(
            RejectReason.QUANTITY_LIMIT,
            f"quantity {quantity:g} is above the hub's maximum {maximum:g} for {what} ({setting})",
        )
    return None


OCA_TYPES: Final = frozenset({0, 1, 2, 3})
# Decoding already enforces these (protocol.py); checked again here because in-process
# callers build requests without decoding them.
MAX_ATTRIBUTE_TEXT: Final = MAX_CLIENT_ORDER_ID  # oca_group, order_ref, algo tags/values


def _text_refusal(name: str, value: str) -> Refusal | None:
    if len(value) > MAX_ATTRIBUTE_TEXT:
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE,
            f"{name} is {len(value)} characters; at most {MAX_ATTRIBUTE_TEXT} are allowed",
        )
    if value and not value.isprintable():
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE, f"{name} contains non-printable characters"
        )
    return None


def check_order_attributes(req: PlaceOrder) -> Refusal | None:
    """OCA, order ref and algo fields: each is honoured, so each must make sense."""
    if req.oca_type not in OCA_TYPES:
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE,
            f"oca_type must be 1 (cancel the others), 2 (reduce them, with block), "
            f"3 (reduce them, no block) or 0 (IB's default), not {req.oca_type}",
        )
    if req.oca_type and not req.oca_group:
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE,
            f"oca_type {req.oca_type} needs an oca_group (the orders it links)",
        )
    if (req.algo_params or req.algo_id) and not req.algo_strategy:
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE,
            "algo_params / algo_id need an algo_strategy (e.g. 'Adaptive')",
        )
    if len(req.algo_params) > MAX_ALGO_PARAMS:
        return Refusal(
            RejectReason.BAD_ORDER_ATTRIBUTE,
            f"{len(req.algo_params)} algo_params; at most {MAX_ALGO_PARAMS} are allowed",
        )
    texts = [
        ("oca_group", req.oca_group),
        ("order_ref", req.order_ref),
        ("algo_strategy", req.algo_strategy),
        ("algo_id", req.algo_id),
    ]
    for tag, value in req.algo_params.items():
        if not tag:
            return Refusal(RejectReason.BAD_ORDER_ATTRIBUTE, "an algo_params tag is empty")
        texts += [(f"algo_params tag {tag[:20]!r}", tag), (f"algo_params[{tag[:20]!r}]", value)]
    for name, value in texts:
        refusal = _text_refusal(name, value)
        if refusal:
            return refusal
    return None


def check_order_type_fields(req: PlaceOrder) -> Refusal | None:
    """Trailing, offset and GTD fields against the order type and TIF (order_types.py)."""
    refusal = order_types.type_refusal(req)
    return Refusal(*refusal) if refusal else None


def _price(
    name: str, value: float | None, last: float | None, limits: RiskLimits, band: bool
) -> Refusal | None:
    if value is None:
        return None
    if not (math.isfinite(value) and value > 0):
        return Refusal(RejectReason.BAD_PRICE, f"{name} must be a finite number > 0, got {value}")
    if not band or limits.price_band_pct <= 0:
        return None
    if last is None or not (math.isfinite(last) and last > 0):
        if limits.require_reference_price:
            return Refusal(
                RejectReason.PRICE_BAND,
                f"no last price is known for this contract, so {name} {value} cannot be "
                "checked against the price band; subscribe to its market data first",
            )
        return None
    deviation = abs(value - last) / last * 100.0
    if deviation > limits.price_band_pct:
        return Refusal(
            RejectReason.PRICE_BAND,
            f"{name} {value} is {deviation:.1f}% away from the last price {last}; the hub "
            f"refuses prices more than {limits.price_band_pct:g}% away (price_band_pct)",
        )
    return None


def validate_params(
    p: OrderParams, limits: RiskLimits, last_price: float | None = None, *, band: bool = True
) -> Refusal | None:
    """Checks of one order's fields; the first problem found, or None.

    ``band=False`` skips the price band (which needs the contract's last price), so the
    hub can refuse a malformed order before it spends a contract lookup on it.
    """
    if p.action not in ACTIONS:
        return Refusal(RejectReason.BAD_ACTION, f"action must be BUY or SELL, not {p.action!r}")
    if p.order_type not in ORDER_TYPES:
        return Refusal(
            RejectReason.BAD_ORDER_TYPE,
            f"order_type must be one of {', '.join(sorted(ORDER_TYPES))}, not {p.order_type!r}",
        )
    if p.tif not in TIFS:
        return Refusal(
            RejectReason.BAD_TIF, f"tif must be one of {', '.join(sorted(TIFS))}, not {p.tif!r}"
        )
    refusal = quantity_refusal(p.quantity, p.sec_type, limits)
    if refusal:
        return refusal
    if order_types.requires(p.order_type, "limit_price") and p.limit_price is None:
        return Refusal(
            RejectReason.MISSING_LIMIT_PRICE, f"a {p.order_type} order needs a limit_price"
        )
    if order_types.requires(p.order_type, "stop_price") and p.stop_price is None:
        what = "stop_price (its trigger)" if p.order_type in ("MIT", "LIT") else "stop_price"
        return Refusal(RejectReason.MISSING_STOP_PRICE, f"a {p.order_type} order needs a {what}")
    uses = order_types.uses
    checks = (
        ("limit_price", p.limit_price if uses(p.order_type, "limit_price") else None),
        ("stop_price", p.stop_price if uses(p.order_type, "stop_price") else None),
        ("take_profit", p.take_profit),
        ("stop_loss", p.stop_loss),
        ("stop_loss_limit", p.stop_loss_limit),
    )
    for name, value in checks:
        refusal = _price(name, value, last_price, limits, band)
        if refusal:
            return refusal
    if p.take_profit is not None and p.stop_loss is not None:
        buy = p.action == "BUY"
        if (p.take_profit <= p.stop_loss) if buy else (p.take_profit >= p.stop_loss):
            side = "above" if buy else "below"
            return Refusal(
                RejectReason.BAD_PRICE,
                f"a {p.action} bracket needs take_profit {side} stop_loss "
                f"(got take_profit={p.take_profit}, stop_loss={p.stop_loss})",
            )
    return None


# --------------------------------------------------------------------------- stateful gate


class TokenBucket:
    """``rate`` tokens per second up to ``capacity``; starts full."""

    __slots__ = ("_clock", "capacity", "rate", "stamp", "tokens")

    def __init__(self, rate: float, capacity: float, clock: Callable[[], float]) -> None:
        self.rate = rate
        self.capacity = capacity
        self.tokens = capacity
        self._clock = clock
        self.stamp = clock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def available(self) -> bool:
        self._refill()
        return self.tokens >= 1.0

    def take(self) -> None:
        self._refill()
        self.tokens -= 1.0

    def wait_time(self) -> float:
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate


class RiskGate:
    """The hub's risk state: limits, what upstream it talks to, and per-lease rate buckets."""

    def __init__(
        self,
        limits: RiskLimits | None = None,
        *,
        upstream_port: int = 0,
        accounts: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits or RiskLimits()
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self.upstream_port = upstream_port
        self.accounts: tuple[str, ...] = tuple(accounts)

    def set_upstream(self, port: int, accounts: Sequence[str]) -> None:
        """Call on (re)connect: managed accounts are known only then."""
        self.upstream_port = port
        self.accounts = tuple(accounts)

    @property
    def live(self) -> str | None:
        """Why the upstream is live, or None (paper)."""
        return live_reason(self.upstream_port, self.accounts)

    @property
    def trading_blocked(self) -> str | None:
        """Why no order may be placed right now (for status and start-up), or None."""
        if self.limits.read_only:
            return "the hub runs read-only"
        live = self.live
        if live and not self.limits.allow_live:
            return f"live trading is off: {live}; start the hub with --live to allow it"
        return None

    @property
    def trading_mode(self) -> str:
        """What the hub may do with orders right now, in words, for the log: refused
        (and why), live trading allowed, or paper trading. Live vs paper comes from the
        upstream port and the managed accounts (known once connected)."""
        blocked = self.trading_blocked
        if blocked:
            return blocked
        live = self.live
        if live:
            return f"LIVE trading allowed (--live): {live}"
        where = f"port {self.upstream_port}" if self.upstream_port else "no port yet"
        if not self.accounts:
            return (
                f"trading allowed (paper {where}; accounts not known until the Gateway "
                "connects, when the live guard is applied again)"
            )
        return f"trading allowed (paper: {where}, account(s) {', '.join(self.accounts)})"

    def _may_trade(self, role: str, account: str) -> Refusal | None:
        if self.limits.read_only:
            return Refusal(
                RejectReason.READ_ONLY_HUB, "the hub runs read-only: it places no orders"
            )
        if role not in (Role.TRADER, Role.OPERATOR):
            return Refusal(
                RejectReason.READ_ONLY_LEASE,
                f"this lease has role {role!r}; say Hello with role='trader' to trade",
            )
        if not self.limits.allow_live:
            live = self.live
            if live is None and account and not is_paper_account(account):
                live = f"account {account} is not a paper account (paper ids start DU/DF)"
            if live:
                return Refusal(
                    RejectReason.LIVE_TRADING,
                    f"live trading is off: {live}. Start the hub with --live "
                    "(or IBHUB_ALLOW_LIVE=1) to allow real orders",
                )
        return None

    def _rate(self, lease: str) -> Refusal | None:
        if self.limits.order_rate <= 0:
            return None
        bucket = self._buckets.get(lease)
        if bucket is None:
            bucket = self._buckets[lease] = TokenBucket(
                self.limits.order_rate, self.limits.order_burst, self._clock
            )
        if not bucket.available():
            return Refusal(
                RejectReason.RATE_LIMIT,
                f"order rate limit: at most {self.limits.order_rate:g} orders/s per lease "
                f"(burst {self.limits.order_burst:g}); retry in {bucket.wait_time():.2f} s",
            )
        bucket.take()
        return None

    def check_static(self, req: PlaceOrder, *, role: str) -> Refusal | None:
        """Checks that need no market data: id, permissions, live guard, fields."""
        return (
            check_client_order_id(req.client_order_id)
            or self._may_trade(role, req.account)
            or validate_params(OrderParams.of(req), self.limits, band=False)
            or check_order_type_fields(req)
            or check_order_attributes(req)
        )

    def check_band_and_rate(
        self, req: PlaceOrder, *, lease: str, last_price: float | None, sec_type: str = ""
    ) -> Refusal | None:
        """The price band (needs the last price) and the quantity rules of the resolved
        contract's ``sec_type``, then the lease's rate limit."""
        params = OrderParams.of(req, sec_type)
        return validate_params(params, self.limits, last_price) or self._rate(lease)

    def check_place(
        self, req: PlaceOrder, *, lease: str, role: str, last_price: float | None = None
    ) -> Refusal | None:
        """Every check for a new order; consumes a rate token only if all others pass."""
        return self.check_static(req, role=role) or self.check_band_and_rate(
            req, lease=lease, last_price=last_price
        )

    def check_modify(
        self,
        req: ModifyOrder,
        current: OrderParams,
        *,
        lease: str,
        role: str,
        account: str = "",
        last_price: float | None = None,
    ) -> Refusal | None:
        return (
            self._may_trade(role, account)
            or validate_params(current.modified(req), self.limits, last_price)
            or self._rate(lease)
        )

    def check_cancel(self, role: str) -> Refusal | None:
        if role not in (Role.TRADER, Role.OPERATOR):
            return Refusal(
                RejectReason.READ_ONLY_LEASE, f"a lease with role {role!r} cannot cancel orders"
            )
        return None

    def check_operator(self, role: str, what: str) -> Refusal | None:
        if role != Role.OPERATOR:
            return Refusal(
                RejectReason.FORBIDDEN,
                f"{what} needs the operator role (Hello role='operator'); this lease is {role!r}",
            )
        return None

    def forget_lease(self, lease: str) -> None:
        self._buckets.pop(lease, None)

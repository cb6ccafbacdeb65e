"""Order types and times in force: which price fields each order type takes, and how the
hub's named fields map to IB's few overloaded ones.

IB overloads ``auxPrice``: the stop of a STP, the trigger of a MIT/LIT, the trailing
amount of a TRAIL, the offset of a REL. The hub's ``PlaceOrder`` names each meaning
(``stop_price`` is the stop *or* trigger price, ``trailing_amount``, ``peg_offset``), so a
script cannot mean one thing and send another; :func:`ib_aux_price` folds them back.

Decisions:

* A field the order type does not use is refused (``bad_order_attribute``), never
  dropped: a trailing percent on a LMT order is a bug in the script. (``limit_price`` /
  ``stop_price`` on a type that does not use them keep their older behaviour: ignored,
  as before these types existed.)
* TRAIL / TRAIL LIMIT take exactly one of ``trailing_amount`` / ``trailing_percent``; a
  TRAIL LIMIT also a ``limit_price_offset`` (its limit is the stop less, for a buy plus,
  the offset), or, as IB allows, a ``limit_price`` with an initial ``trail_stop_price``.
* REL: ``peg_offset`` (default 0: peg at the bid / ask) and an optional cap
  ``limit_price``; MIDPRICE: an optional cap ``limit_price``.
* MOC / LOC trade in the closing auction and are DAY orders (IB refuses other TIFs).
* TIF GTD needs ``good_till_date`` (IB's ``"YYYYMMDD HH:MM:SS [zone]"`` or
  ``"YYYYMMDD-HH:MM:SS"`` UTC), in the future; the text reaches the Gateway unchanged.
  ``good_till_date`` without GTD is refused. OPG, DTC, GTX are not offered. A time
  without a zone is in the Gateway's time zone, which the hub does not know, so only
  its format is checked there.
* A bracket's stop-loss leg is a STP at ``stop_loss``, or with ``stop_loss_limit`` a
  STP LMT (stop ``stop_loss``, limit ``stop_loss_limit``), as ib_insync's
  ``bracketOrder`` with a StopLimitOrder builds it.
* These fields are stored in the journal as one JSON column (``order_params``, schema 3),
  so a later field costs no migration.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable
from typing import Any, Final

from ibhub.protocol import PlaceOrder, RejectReason
from ibhub.tws.order_time import OrderTimeError, parse_order_time

#: order type -> the price fields it needs; "?" marks an optional one
ORDER_TYPES: Final[dict[str, tuple[str, ...]]] = {
    "MKT": (),
    "MOC": (),
    "LMT": ("limit_price",),
    "LOC": ("limit_price",),
    "STP": ("stop_price",),
    "MIT": ("stop_price",),
    "STP LMT": ("limit_price", "stop_price"),
    "LIT": ("limit_price", "stop_price"),
    "TRAIL": ("trailing", "trail_stop_price?"),
    "TRAIL LIMIT": ("trailing", "trail_stop_price?", "limit_price_offset?", "limit_price?"),
    "REL": ("peg_offset?", "limit_price?"),
    "MIDPRICE": ("limit_price?",),
}
TIFS: Final = frozenset({"DAY", "GTC", "IOC", "FOK", "GTD"})
AT_CLOSE: Final = frozenset({"MOC", "LOC"})
#: PlaceOrder fields added with these order types (one JSON journal column)
PARAM_FIELDS: Final = (
    "trailing_amount", "trailing_percent", "trail_stop_price", "limit_price_offset",
    "peg_offset", "good_till_date",
)  # fmt: skip
_TRAILING: Final = ("trailing_amount", "trailing_percent")


def uses(order_type: str, name: str) -> bool:
    """Whether ``order_type`` takes the field ``name`` (required or optional)."""
    wanted = ORDER_TYPES.get(order_type, ())
    if name in _TRAILING:
        return "trailing" in wanted
    return name in wanted or f"{name}?" in wanted


def requires(order_type: str, name: str) -> bool:
    return name in ORDER_TYPES.get(order_type, ())


def params_of(req: PlaceOrder) -> dict[str, Any]:
    """The order-type fields of ``req`` that are set (for the journal and OrderInfo)."""
    out: dict[str, Any] = {}
    for name in PARAM_FIELDS:
        value = getattr(req, name)
        if value not in (None, ""):
            out[name] = value
    return out


def encode_params(params: dict[str, Any]) -> str:
    return json.dumps(params, separators=(",", ":"), sort_keys=True) if params else ""


def decode_params(text: str) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if k in PARAM_FIELDS}


def ib_aux_price(order_type: str, stop_price: float | None, params: dict[str, Any]
                 ) -> float | None:
    """IB's auxPrice for an order: the stop / trigger, the trailing amount or the offset."""
    if order_type in ("TRAIL", "TRAIL LIMIT"):
        value = params.get("trailing_amount")
        return None if value is None else float(value)
    if order_type == "REL":
        value = params.get("peg_offset")
        return 0.0 if value is None else float(value)
    return stop_price


def _positive(name: str, value: float | None) -> str | None:
    if value is not None and not (math.isfinite(value) and value > 0):
        return f"{name} must be a finite number > 0, got {value}"
    return None


def type_refusal(req: PlaceOrder, now: Callable[[], dt.datetime] | None = None
                 ) -> tuple[str, str] | None:
    """(reason, message) if the order-type fields of ``req`` do not fit its type/TIF."""
    otype = req.order_type
    for name in PARAM_FIELDS[:-1]:
        if getattr(req, name) is not None and not uses(otype, name):
            return (RejectReason.BAD_ORDER_ATTRIBUTE,
                    f"{name} is not used by a {otype} order; leave it unset")
    if "trailing" in ORDER_TYPES.get(otype, ()):
        given = [n for n in _TRAILING if getattr(req, n) is not None]
        if len(given) != 1:
            return (RejectReason.BAD_ORDER_ATTRIBUTE,
                    f"a {otype} order needs exactly one of trailing_amount / trailing_percent")
        pct = req.trailing_percent
        if pct is not None and not (math.isfinite(pct) and 0 < pct < 100):
            return (RejectReason.BAD_ORDER_ATTRIBUTE,
                    f"trailing_percent must be in (0, 100), got {pct}")
    if otype == "TRAIL LIMIT" and req.limit_price_offset is None and (
            req.limit_price is None or req.trail_stop_price is None):
        return (RejectReason.MISSING_LIMIT_PRICE,
                "a TRAIL LIMIT order needs a limit_price_offset, or a limit_price with an "
                "initial trail_stop_price")
    for name in ("trailing_amount", "trail_stop_price", "limit_price_offset"):
        problem = _positive(name, getattr(req, name))
        if problem:
            return RejectReason.BAD_PRICE, problem
    offset = req.peg_offset
    if offset is not None and not (math.isfinite(offset) and offset >= 0):
        return RejectReason.BAD_PRICE, f"peg_offset must be a finite number >= 0, got {offset}"
    if req.stop_loss_limit is not None:
        if req.stop_loss is None:
            return (RejectReason.BAD_ORDER_ATTRIBUTE,
                    "stop_loss_limit makes the stop-loss leg a STP LMT: it needs a stop_loss")
        problem = _positive("stop_loss_limit", req.stop_loss_limit)
        if problem:
            return RejectReason.BAD_PRICE, problem
    if otype in AT_CLOSE and req.tif != "DAY":
        return RejectReason.BAD_TIF, f"{otype} orders trade at the close: tif must be DAY"
    return gtd_refusal(req.tif, req.good_till_date, now)


def gtd_refusal(tif: str, good_till_date: str,
                now: Callable[[], dt.datetime] | None = None) -> tuple[str, str] | None:
    if tif != "GTD":
        if good_till_date:
            return (RejectReason.BAD_TIF,
                    f"good_till_date is only used with tif='GTD' (tif is {tif!r})")
        return None
    if not good_till_date:
        return RejectReason.BAD_TIF, "a GTD order needs a good_till_date"
    try:
        until = parse_order_time(good_till_date)
    except OrderTimeError as exc:
        return RejectReason.BAD_TIF, f"good_till_date: {exc}"
    current = now() if now is not None else dt.datetime.now(dt.UTC)
    zoned = "-" in good_till_date.strip()[:17] or len(good_till_date.strip()) > 17
    if zoned and until <= current:  # a time without a zone is the Gateway's: it decides
        return RejectReason.BAD_TIF, f"good_till_date {good_till_date!r} is in the past"
    return None

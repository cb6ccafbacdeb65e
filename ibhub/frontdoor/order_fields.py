"""placeOrder fields through the front door: each honoured (mapped to the hub's
:class:`~ibhub.protocol.PlaceOrder`) or refused naming it, never dropped.

Pure functions over the simulator's sv 176 field walk (:class:`OrderRequest`):
:func:`unhonoured` lists what the hub would not honour, :func:`refusal_for` the error
for them, :func:`type_fields` folds IB's overloaded ``auxPrice`` / ``lmtPrice`` and the
trailing / GTD fields into the hub's named fields, :func:`fixed_changes` what a
modification may not change.
"""

from __future__ import annotations

from typing import Any, Final

from ibhub.frontdoor.requests import UNSUPPORTED, unsupported_text
from ibhub.orders import order_types
from ibhub.orders.journal import OrderRecord
from ibhub.orders.port import decode_algo_params
from ibhub.sim.orders import OrderRequest
from ibhub.tws.codec import UNSET_DOUBLE, UNSET_INT

# ---------------------------------------------------------------- attributes of placeOrder
#
# Every field of the placeOrder walk is either honoured (it reaches the hub's PlaceOrder and
# the Gateway) or must hold its default; an order with any other attribute set is refused
# with an error on its id that names the attribute, never placed without it. Defaults are
# what ib_insync / ib_async / ibapi send for an Order nobody touched ('' for unset values).

#: Fields the hub honours (or handles before this check: whatIf, transmit, parentId).
HONOURED: Final = frozenset({
    "action", "totalQuantity", "orderType", "tif", "ocaGroup", "account", "orderRef",
    "transmit", "parentId", "outsideRth", "ocaType", "algoStrategy", "algoParams",
    "algoParams tag", "algoParams value", "algoId", "whatIf", "sharesAllocation",
    "lmtPrice", "auxPrice",  # checked against the order type below
    # order-type fields: the hub refuses them where the order type does not use them
    "goodTillDate", "trailStopPrice", "trailingPercent", "lmtPriceOffset",
})  # fmt: skip
_NEUTRAL: Final = frozenset({"", "0", "0.0", "false", "False"})
#: Defaults other than "unset / zero / false".
_DEFAULTS: Final[dict[str, frozenset[str]]] = {
    "exemptCode": frozenset({"", "-1"}),
    "openClose": frozenset({"", "O"}),  # ib_insync sends "O" (open) by default
    "discretionaryAmt": frozenset({"", "0", "0.0"}),
}
#: What a refused attribute is, for the error text.
_WHAT: Final[dict[str, str]] = {
    "secIdType": "contract by security id (use conId or symbol)",
    "hedgeType": "hedge orders", "deltaNeutralOrderType": "delta-neutral orders",
    "deltaNeutralContract": "delta-neutral contracts", "conditions": "order conditions",
    "scalePriceIncrement": "scale orders", "scaleInitLevelSize": "scale orders",
    "adjustedOrderType": "adjusted (attached) orders", "comboLegs": "combo orders",
    "goodAfterTime": "good-after-time orders",
    "hidden": "hidden orders", "displaySize": "iceberg orders",
    "faGroup": "FA allocation", "faMethod": "FA allocation", "faPercentage": "FA allocation",
    "faProfile": "FA allocation", "volatility": "volatility orders",
    "cashQty": "cash-quantity orders", "triggerMethod": "stop trigger methods",
    "lmtPrice": "a limit price on an order type without one",
    "auxPrice": "an auxPrice (stop, trigger, trailing amount, offset) on an order type "
                "without one",
}  # fmt: skip
#: IB's own error for attributes it no longer accepts (code, attribute name in the text).
_IB_CODES: Final[dict[str, tuple[int, str]]] = {
    "eTradeOnly": (10268, "EtradeOnly"),
    "firmQuoteOnly": (10269, "firmQuoteOnly"),
    "nbboPriceCap": (10270, "nbboPriceCap"),
}


def _is_default(name: str, value: str) -> bool:
    if value in _DEFAULTS.get(name, _NEUTRAL):
        return True
    if name in _DEFAULTS:
        return False
    try:
        number = float(value)
    except ValueError:
        return False
    return number >= UNSET_DOUBLE or number == UNSET_INT  # an unset value sent literally


def unhonoured(req: OrderRequest) -> list[str]:
    """The attributes of a placeOrder the hub would not honour, in wire order."""
    out = [name for name, value in req.attributes
           if name not in HONOURED and not _is_default(name, value)]
    # a price the order type does not use (0 is how some clients write "no price"); an
    # order type the hub does not know is the hub's to refuse (bad_order_type)
    if req.order_type in order_types.ORDER_TYPES:
        if not order_types.uses(req.order_type, "limit_price") and req.lmt_price not in (
                None, 0.0):
            out.append("lmtPrice")
        if req.order_type not in _AUX_TYPES and req.aux_price not in (None, 0.0):
            out.append("auxPrice")
    return out


#: order types whose IB auxPrice means something (order_types.ib_aux_price)
_AUX_TYPES: Final = frozenset({"STP", "STP LMT", "MIT", "LIT", "TRAIL", "TRAIL LIMIT", "REL"})


def type_fields(req: OrderRequest) -> dict[str, Any]:
    """PlaceOrder's price and order-type fields from IB's overloaded ones."""
    otype = req.order_type
    aux = req.aux_price
    trailing = otype in ("TRAIL", "TRAIL LIMIT")
    return {
        "limit_price": req.lmt_price if order_types.uses(otype, "limit_price") else None,
        "stop_price": aux if order_types.uses(otype, "stop_price") else None,
        "trailing_amount": aux if trailing else None,
        "trailing_percent": req.trailing_percent,
        "trail_stop_price": req.trail_stop_price,
        "limit_price_offset": req.lmt_price_offset,
        "peg_offset": aux if otype == "REL" else None,
        "good_till_date": req.good_till_date,
    }


def refusal_for(names: list[str]) -> tuple[int, str]:
    """The error for an order with unhonoured attributes: IB's own code where IB refuses
    the attribute itself, else the front door's "not supported"."""
    for name in names:
        if name in _IB_CODES:
            code, ib_name = _IB_CODES[name]
            return code, f"The '{ib_name}' order attribute is not supported."
    parts = [f"'{n}' ({_WHAT[n]})" if n in _WHAT else f"'{n}'" for n in names]
    return UNSUPPORTED, unsupported_text(
        3, f"order attribute {', '.join(parts)} is not honoured by the hub, so the order was "
           "not placed; clear it or place the order elsewhere")


def fixed_changes(rec: OrderRecord, req: OrderRequest) -> list[str]:
    """Attributes a modification may not change (ModifyOrder has no field for them): a
    different value is refused, never dropped."""
    old = order_types.decode_params(rec.order_params)
    new = {k: v for k, v in type_fields(req).items()
           if k in order_types.PARAM_FIELDS and v not in (None, "")}
    pairs = (
        ("the order-type fields (trailing amount/percent, trailStopPrice, lmtPriceOffset, "
         "REL offset, goodTillDate)", old, new),
        ("ocaGroup", rec.oca_group, req.oca_group),
        ("ocaType", rec.oca_type, req.oca_type),
        ("orderRef", rec.order_ref, req.order_ref),
        ("algoStrategy", rec.algo_strategy, req.algo_strategy),
        ("algoParams", decode_algo_params(rec.algo_params), dict(req.algo_params)),
        ("algoId", rec.algo_id, req.algo_id),
        ("action", rec.action, req.action),
        ("account", rec.account, req.account or rec.account),
    )
    changed = [name for name, old, new in pairs if old != new]
    con_id = req.c12[0]
    if con_id not in ("", "0") and con_id != str(rec.con_id):
        changed.append("the contract")
    return changed

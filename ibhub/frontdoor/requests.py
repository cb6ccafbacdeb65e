"""Names of the TWS API requests (message ids at server version 176), for error texts.

A request the front door does not serve is answered with an error on its request
id that names it ("reqScannerSubscription is not supported through ibhub"), so
the script's log says what to change; an IB client waiting for a reply that never
comes would hang instead.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

REQUEST_NAMES: Final[dict[int, str]] = {
    1: "reqMktData", 2: "cancelMktData", 3: "placeOrder", 4: "cancelOrder",
    5: "reqOpenOrders", 6: "reqAccountUpdates", 7: "reqExecutions", 8: "reqIds",
    9: "reqContractDetails", 10: "reqMktDepth", 11: "cancelMktDepth",
    12: "reqNewsBulletins", 13: "cancelNewsBulletins", 14: "setServerLogLevel",
    15: "reqAutoOpenOrders", 16: "reqAllOpenOrders", 17: "reqManagedAccts", 18: "requestFA",
    19: "replaceFA", 20: "reqHistoricalData", 21: "exerciseOptions",
    22: "reqScannerSubscription", 23: "cancelScannerSubscription",
    24: "reqScannerParameters", 25: "cancelHistoricalData", 49: "reqCurrentTime",
    50: "reqRealTimeBars", 51: "cancelRealTimeBars", 52: "reqFundamentalData",
    53: "cancelFundamentalData", 54: "calculateImpliedVolatility",
    55: "calculateOptionPrice", 56: "cancelCalculateImpliedVolatility",
    57: "cancelCalculateOptionPrice", 58: "reqGlobalCancel", 59: "reqMarketDataType",
    61: "reqPositions", 62: "reqAccountSummary", 63: "cancelAccountSummary",
    64: "cancelPositions", 65: "verifyRequest", 66: "verifyMessage",
    67: "queryDisplayGroups", 68: "subscribeToGroupEvents", 69: "updateDisplayGroup",
    70: "unsubscribeFromGroupEvents", 71: "startApi", 72: "verifyAndAuthRequest",
    73: "verifyAndAuthMessage", 74: "reqPositionsMulti", 75: "cancelPositionsMulti",
    76: "reqAccountUpdatesMulti", 77: "cancelAccountUpdatesMulti",
    78: "reqSecDefOptParams", 79: "reqSoftDollarTiers", 80: "reqFamilyCodes",
    81: "reqMatchingSymbols", 82: "reqMktDepthExchanges", 83: "reqSmartComponents",
    84: "reqNewsArticle", 85: "reqNewsProviders", 86: "reqHistoricalNews",
    87: "reqHeadTimeStamp", 88: "reqHistogramData", 89: "cancelHistogramData",
    90: "cancelHeadTimestamp", 91: "reqMarketRule", 92: "reqPnL", 93: "cancelPnL",
    94: "reqPnLSingle", 95: "cancelPnLSingle", 96: "reqHistoricalTicks",
    97: "reqTickByTickData", 98: "cancelTickByTickData", 99: "reqCompletedOrders",
    100: "reqWshMetaData", 101: "cancelWshMetaData", 102: "reqWshEventData",
    103: "cancelWshEventData", 104: "reqUserInfo",
}  # fmt: skip

#: Error code for "not supported through ibhub": IB's "error reading request". It is a
#: warning in neither ib_insync nor ib_async (321 is one in ib_async), so it ends the
#: request in both instead of leaving it waiting.
UNSUPPORTED: Final = 320
#: "Not connected": the hub has no Gateway session for a request that needs one.
NOT_CONNECTED: Final = 504


def request_name(msg_id: int) -> str:
    return REQUEST_NAMES.get(msg_id, f"message {msg_id}")


def unsupported_text(msg_id: int, why: str = "") -> str:
    tail = f": {why}" if why else "; see docs/tws-front-door.md for what is served"
    return f"{request_name(msg_id)} is not supported through ibhub{tail}"


#: The longest field a script's request may carry. The longest real ones (a generic
#: tick list, ``tag=value;`` option lists, an end date-time) are under 200 characters;
#: typed fields (symbols, accounts, order fields) have tighter limits per kind
#: (``protocol.MAX_*``) where the front door turns them into hub requests.
MAX_FIELD: Final = 1024
#: C0 controls, DEL, C1 controls, U+2028/U+2029 (``protocol.TEXT_PATTERN``'s set; NUL
#: cannot occur: it separates the fields).
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def field_problem(fields: Sequence[str]) -> str | None:
    """Why a script's request must not be served or passed upstream, or None: a field
    with a control character, or longer than :data:`MAX_FIELD`. Names the field by its
    position (0 is the message id)."""
    for index, text in enumerate(fields):
        if len(text) > MAX_FIELD:
            return f"field {index} is {len(text)} characters long (at most {MAX_FIELD})"
        m = _CONTROL.search(text)
        if m is not None:
            return (
                f"field {index} contains control character U+{ord(m.group()):04X}; "
                "request fields must be printable text"
            )
    return None

"""IB error and status codes: what each one means and what to do about it.

TWS reports errors, warnings and plain status notices through one channel (the
``error`` message, id 4), so a code alone has to tell the hub three things:

* how bad it is (``Category``), so logs and alerts use the right level;
* whether it ends the request that carries its id (``is_warning`` is False) or is
  only informational.  This follows ib_insync's own rule (2100-2199 plus a short
  list), because ib_insync decides whether a pending request fails and the hub
  must agree with it;
* whether it concerns every client (connectivity and data-farm notices, sent with
  reqId -1) and so belongs on ``hub.status`` rather than to one requester.

The table is shipped data, not fetched: the meanings are written for this project
from IB's published message-code list and from behaviour seen on real Gateways.
An unknown code never raises; it gets a generic explanation built from its range.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "Category",
    "Explanation",
    "all_codes",
    "concerns_everyone",
    "explain",
    "format_error",
    "is_warning",
]


class Category(StrEnum):
    """How serious a code is, from harmless to "this connection is unusable"."""

    INFO = "info"  # a notice that something is fine (farm OK, order cancelled as asked)
    WARNING = "warning"  # worth a look, nothing failed yet (farm down, order held)
    REQUEST = "request_error"  # one request failed; the connection is fine
    ORDER = "order_rejection"  # an order was rejected or cannot be changed
    CONNECTIVITY = "connectivity"  # link between TWS/Gateway and IB servers changed
    FATAL = "fatal"  # this API connection cannot go on: reconnect or fix setup


@dataclass(frozen=True, slots=True)
class Explanation:
    code: int
    meaning: str
    action: str
    category: Category

    @property
    def known(self) -> bool:
        return self.code in _TABLE

    def as_dict(self) -> dict[str, object]:
        return {
            "code": self.code,
            "meaning": self.meaning,
            "action": self.action,
            "category": str(self.category),
            "warning": is_warning(self.code),
            "concerns_everyone": concerns_everyone(self.code),
            "known": self.known,
        }


C = Category
# code -> (meaning, action, category)
_ROWS: Final[dict[int, tuple[str, str, Category]]] = {
    # ------------------------------------------------------------ requests and pacing
    100: (
        "Too many messages per second: the API client exceeded TWS's message rate (50/s).",
        "Slow down; throttle requests (ibhub paces upstream requests for you). Repeated "
        "violations make TWS drop the connection.",
        C.REQUEST,
    ),
    101: (
        "The maximum number of simultaneous market-data lines (tickers) has been reached.",
        "Cancel unused subscriptions or buy more lines (quote booster); the default is "
        "100 lines per login.",
        C.REQUEST,
    ),
    102: (
        "Duplicate ticker id: a market-data request reused an id that is still active.",
        "Use a fresh request id, or cancel the old subscription first.",
        C.REQUEST,
    ),
    103: (
        "Duplicate order id: the order id was already used in this session.",
        "Take order ids from nextValidId / reqIds and never reuse or go below them.",
        C.ORDER,
    ),
    104: (
        "Cannot modify an order that is already filled.",
        "Check the order's status before modifying it.",
        C.ORDER,
    ),
    105: (
        "The order being modified does not match the original order.",
        "Modify with the same contract and action as the original; only change price, "
        "quantity and similar fields.",
        C.ORDER,
    ),
    106: (
        "Cannot transmit the order with this id.",
        "Check the order id and that the order is still open.",
        C.ORDER,
    ),
    107: (
        "Cannot transmit an incomplete order.",
        "Fill in the missing order fields (quantity, order type, prices) and resend.",
        C.ORDER,
    ),
    109: (
        "The price is outside the range allowed by the Percentage setting in order presets.",
        "Fix the price, or widen the percentage constraint in TWS order presets "
        "(or set overridePercentageConstraints).",
        C.ORDER,
    ),
    110: (
        "The price does not conform to the contract's minimum price increment (tick size).",
        "Round the price to the contract's minTick (see contract details / market rules).",
        C.ORDER,
    ),
    111: (
        "The time in force and the order type are incompatible.",
        "Choose a TIF this order type supports (e.g. DAY for MOC/LOC).",
        C.ORDER,
    ),
    113: (
        "The time in force must be DAY for MOC and LOC orders.",
        "Set tif='DAY'.",
        C.ORDER,
    ),
    135: (
        "No order with this id was found.",
        "The order id is wrong or the order belongs to another client id.",
        C.ORDER,
    ),
    136: (
        "This order cannot be cancelled.",
        "It is probably already filled or being processed; check its status.",
        C.ORDER,
    ),
    161: (
        "Cancel attempted while the order is not in a cancellable state.",
        "The order is already filled, cancelled or pending; check its status.",
        C.ORDER,
    ),
    162: (
        "Historical market data service error (no data for the query, no permission, "
        "pacing violation, or the query was cancelled).",
        "Read the message text: check permissions, the contract, duration and bar size; "
        "for pacing, no identical request within 15 s and, for bars of 30 s or less, "
        "no more than 60 requests in 10 minutes.",
        C.REQUEST,
    ),
    165: (
        "Historical market data service query message (informational).",
        "Nothing to do; it reports the state of a historical-data query.",
        C.INFO,
    ),
    166: (
        "Historical data for an expired contract is not available this way.",
        "Set includeExpired for futures/options, or choose an available date range.",
        C.REQUEST,
    ),
    200: (
        "No security definition found for the request (unknown or ambiguous contract).",
        "Check symbol, secType, exchange, currency, expiry/strike/right; qualify the "
        "contract with reqContractDetails first.",
        C.REQUEST,
    ),
    201: (
        "Order rejected; the message gives the reason (margin, permissions, price, "
        "size limits, trading hours ...).",
        "Read the reason and fix the order or the account; the order will not work.",
        C.ORDER,
    ),
    202: (
        "Order cancelled; the message gives the reason (often just the confirmation "
        "of a cancel you asked for).",
        "Nothing to do if you cancelled it; otherwise read the reason.",
        C.INFO,
    ),
    203: (
        "The security is not available or not allowed for this account.",
        "Request trading permission for this product in Account Management.",
        C.ORDER,
    ),
    300: (
        "No active request with this ticker id (e.g. cancelling a subscription that is not there).",
        "Cancel only ids you subscribed; the subscription may already be gone after a reconnect.",
        C.REQUEST,
    ),
    309: (
        "The maximum number of market-depth (level 2) requests has been reached.",
        "Cancel other depth subscriptions first.",
        C.REQUEST,
    ),
    310: (
        "No market-depth subscription with this ticker id.",
        "Cancel only depth subscriptions that exist.",
        C.REQUEST,
    ),
    317: (
        "Market depth data has been reset.",
        "Clear the local order book for this id and rebuild it from the coming updates.",
        C.WARNING,
    ),
    320: (
        "Server error while reading an API client request.",
        "The request is malformed for this server version; check client and TWS versions.",
        C.REQUEST,
    ),
    321: (
        "Server error while validating an API client request (a field is invalid or "
        "not allowed, e.g. read-only API, bad account, bad parameter).",
        "Read the message text; if it says 'read-only', untick Read-Only API in "
        "Configure > API > Settings.",
        C.REQUEST,
    ),
    322: (
        "Server error while processing an API client request (often a duplicate "
        "request id or too many simultaneous requests of one kind).",
        "Use unique request ids and cancel old requests before making new ones.",
        C.REQUEST,
    ),
    323: (
        "Server error; the message gives the cause.",
        "Read the message text.",
        C.REQUEST,
    ),
    326: (
        "Unable to connect: the client id is already in use.",
        "Another script, or a half-open socket from a crashed one, holds this id; TWS "
        "frees a half-open socket's id only after a while. Use another id "
        "(`ibhub lease` hands out free ones) or stop the other client.",
        C.FATAL,
    ),
    354: (
        "Requested market data is not subscribed (no market-data permission for it).",
        "Subscribe to the market-data package in Account Management, or request "
        "delayed data with reqMarketDataType(3).",
        C.REQUEST,
    ),
    366: (
        "No historical data query found for this ticker id.",
        "Cancel only historical requests that are still running.",
        C.REQUEST,
    ),
    399: (
        "Order message: a warning about an accepted order (e.g. it will not be placed "
        "at the exchange until the market opens).",
        "Usually nothing; the order stays working. Read the text.",
        C.WARNING,
    ),
    404: (
        "Shares are not immediately available to short; the order is held while IB "
        "tries to locate them.",
        "Wait, or cancel the order; it works once shares are located.",
        C.WARNING,
    ),
    434: (
        "The order size cannot be zero.",
        "Send a positive totalQuantity.",
        C.WARNING,
    ),
    460: (
        "No trading permissions for this product.",
        "Request the trading permission in Account Management.",
        C.ORDER,
    ),
    492: (
        "Scanner results are imprecise: a market-data subscription is missing for one "
        "of the scanner's filters.",
        "Subscribe to the data named in the message if precise scanner results matter.",
        C.WARNING,
    ),
    # ------------------------------------------------------------ client-side (API library)
    501: (
        "Already connected (reported by the API client library).",
        "Do not call connect twice on the same client.",
        C.REQUEST,
    ),
    502: (
        "Could not connect to TWS/Gateway (reported by the API client library).",
        "Run `ibhub doctor`: check that TWS/Gateway runs, Configure > API > Settings > "
        "Enable ActiveX and Socket Clients is on, and the port matches Socket port "
        "(7497/7496 TWS paper/live, 4002/4001 Gateway paper/live).",
        C.FATAL,
    ),
    503: (
        "TWS/Gateway is too old for this API client.",
        "Upgrade TWS/IB Gateway.",
        C.FATAL,
    ),
    504: (
        "Not connected (reported by the API client library when sending without a connection).",
        "Connect first, or wait for the reconnect; check with `ibhub doctor`.",
        C.CONNECTIVITY,
    ),
    505: (
        "Fatal error: unknown message id received (client and server out of step).",
        "Reconnect; upgrade the client library if it persists.",
        C.FATAL,
    ),
    507: (
        "Bad message length (client library): the socket stream is corrupt or was "
        "closed by TWS mid-message, often right after a 326 or a rejected connection.",
        "Reconnect; if it follows a connect, check the client id and Trusted IPs.",
        C.FATAL,
    ),
    509: (
        "Exception while reading the socket (client library): the connection broke.",
        "Reconnect; look at why TWS/Gateway went away (restart, crash, network).",
        C.FATAL,
    ),
    # ------------------------------------------------------------ connectivity (system)
    1100: (
        "Connectivity between IB's servers and TWS/Gateway has been lost.",
        "Wait: TWS reconnects by itself (nightly server reset, internet problem, or a "
        "competing login). Do not place orders until 1101/1102 arrives.",
        C.CONNECTIVITY,
    ),
    1101: (
        "Connectivity restored, data lost: market-data subscriptions were dropped.",
        "Resubscribe all market data (ibhub does this for you).",
        C.CONNECTIVITY,
    ),
    1102: (
        "Connectivity restored, data maintained: subscriptions are still active.",
        "Nothing to do.",
        C.CONNECTIVITY,
    ),
    1300: (
        "The TWS socket port was changed; this connection is being dropped.",
        "Reconnect on the new port named in the message (and update ibhub's config).",
        C.FATAL,
    ),
    # ------------------------------------------------------------ warnings 2100-2199
    2100: (
        "New account data requested: this API client was unsubscribed from account "
        "updates (only one account-updates subscription is allowed).",
        "Expected when another request replaced the subscription; resubscribe if needed.",
        C.WARNING,
    ),
    2101: (
        "Cannot subscribe to the account: other clients are subscribed to a different account.",
        "Use the same account, or have the other client unsubscribe.",
        C.WARNING,
    ),
    2102: (
        "Cannot modify this order: it is still being processed.",
        "Wait for its status to settle, then modify again.",
        C.WARNING,
    ),
    2103: (
        "A market data farm is disconnected.",
        "Usually temporary (nightly reset or an ISP problem); data resumes on 2104.",
        C.WARNING,
    ),
    2104: (
        "Market data farm connection is OK.",
        "Nothing to do; normal at connect.",
        C.INFO,
    ),
    2105: (
        "A historical data farm is disconnected.",
        "Usually temporary; historical requests may fail until 2106.",
        C.WARNING,
    ),
    2106: (
        "A historical data farm is connected.",
        "Nothing to do; normal at connect.",
        C.INFO,
    ),
    2107: (
        "A historical data farm connection is inactive but available on demand.",
        "Nothing to do; it wakes up with the next historical request.",
        C.INFO,
    ),
    2108: (
        "A market data farm connection is inactive but available on demand.",
        "Nothing to do; it wakes up with the next market-data request.",
        C.INFO,
    ),
    2109: (
        "Order event warning: the 'outside regular trading hours' flag is ignored for "
        "this order type and destination; the order is processed anyway.",
        "Nothing to do, unless you needed the order to work outside RTH.",
        C.WARNING,
    ),
    2110: (
        "Connectivity between TWS and IB's server is broken; it will be restored automatically.",
        "Wait for the restore; avoid trading until then.",
        C.CONNECTIVITY,
    ),
    2119: (
        "A market data farm is connecting.",
        "Nothing to do; 2104 follows when it is up.",
        C.INFO,
    ),
    2137: (
        "Cross side warning: the order would flip the position from long to short or "
        "back (often 'The closing order quantity is greater than your current "
        "position').",
        "Check the position and the order size; if flipping is intended, the warning "
        "can be turned off in Global Configuration > Messages > Cross Side Warning.",
        C.WARNING,
    ),
    2157: (
        "The security-definition data farm is disconnected.",
        "Usually temporary; contract lookups may fail until 2158.",
        C.WARNING,
    ),
    2158: (
        "The security-definition data farm connection is OK.",
        "Nothing to do; normal at connect.",
        C.INFO,
    ),
    2168: (
        "The EtradeOnly order attribute is not supported.",
        "Set order.eTradeOnly = False (it is the default in recent clients).",
        C.ORDER,
    ),
    2169: (
        "The firmQuoteOnly order attribute is not supported.",
        "Set order.firmQuoteOnly = False (it is the default in recent clients).",
        C.ORDER,
    ),
    # ------------------------------------------------------------ 10000+
    10089: (
        "The requested market data needs an additional API subscription; delayed data "
        "is available.",
        "Subscribe in Account Management (see 'Market Data Connections' in TWS), or "
        "use delayed data with reqMarketDataType(3).",
        C.REQUEST,
    ),
    10090: (
        "Part of the requested market data is not subscribed; the ticks that need no "
        "subscription still flow. Delayed data is available.",
        "Subscribe to the missing data or use delayed data.",
        C.WARNING,
    ),
    10147: (
        "The order to cancel was not found.",
        "It is already done or the id is wrong; check open orders.",
        C.ORDER,
    ),
    10148: (
        "The order cannot be cancelled in its current state (message gives the state).",
        "It is already filled, cancelled or pending cancel; check its status.",
        C.ORDER,
    ),
    10167: (
        "Market data is not subscribed; delayed market data is shown instead.",
        "Fine for testing; subscribe for live data.",
        C.WARNING,
    ),
    10168: (
        "Market data is not subscribed and delayed market data is not enabled.",
        "Subscribe to market data, or enable delayed data with reqMarketDataType(3).",
        C.REQUEST,
    ),
    10182: (
        "Failed to request live updates for historical data (the data farm is disconnected).",
        "Request the historical data again once the farm is back (2106).",
        C.REQUEST,
    ),
    10197: (
        "No market data during a competing live session: the same user is logged in "
        "elsewhere (another TWS, the mobile app or the web portal).",
        "Log out of the other session, or get a second username for the API.",
        C.REQUEST,
    ),
    10225: (
        "A bust event occurred; the real-time bars subscription was deactivated.",
        "Resubscribe to real-time bars now.",
        C.REQUEST,
    ),
}
del C

_TABLE: Final[dict[int, Explanation]] = {
    code: Explanation(code, meaning, action, category)
    for code, (meaning, action, category) in _ROWS.items()
}

# ib_insync's warning rule (wrapper.error): these never end the request they carry.
_WARNING_CODES: Final = frozenset({110, 165, 202, 399, 404, 434, 492, 10167})

# Codes about the Gateway's link to IB, not about one request: they go to hub.status.
_EVERYONE_CODES: Final = frozenset(
    {1100, 1101, 1102, 1300, 2103, 2104, 2105, 2106, 2107, 2108, 2110, 2119, 2157, 2158}
)


def explain(code: int) -> Explanation:
    """The explanation of ``code``; unknown codes get a generic one (never raises)."""
    found = _TABLE.get(code)
    if found is not None:
        return found
    return _generic(code)


def _generic(code: int) -> Explanation:
    if 2100 <= code < 2200:
        return Explanation(
            code,
            "An informational warning from TWS/Gateway (2100-2199 are warnings).",
            "Read the message text; it does not end any request.",
            Category.WARNING,
        )
    if 500 <= code < 600:
        return Explanation(
            code,
            "An error raised by the API client library itself (500-599), usually about the socket.",
            "Read the message text; reconnect if the connection broke.",
            Category.FATAL,
        )
    if 1100 <= code < 1400:
        return Explanation(
            code,
            "A system message about connectivity between TWS/Gateway and IB.",
            "Read the message text; check the hub's upstream state.",
            Category.CONNECTIVITY,
        )
    return Explanation(
        code,
        "An IB error code that ibhub's table does not list.",
        "Read the message text that came with it, and search IB's message-code list "
        "(TWS API documentation, 'Message Codes').",
        Category.REQUEST,
    )


def is_warning(code: int) -> bool:
    """True for informational codes that do not end the request they refer to.

    Same rule as ib_insync (2100-2199 plus 110, 165, 202, 399, 404, 434, 492, 10167),
    so the hub and the library agree on whether a request failed.
    """
    return code in _WARNING_CODES or 2100 <= code < 2200


def concerns_everyone(code: int) -> bool:
    """True for connectivity and data-farm notices that belong on ``hub.status``."""
    return code in _EVERYONE_CODES


def format_error(code: int, message: str) -> str:
    """One log line: ``IB 201 [order_rejection]: <IB text> -- <what to do>``."""
    exp = explain(code)
    text = message.strip() or exp.meaning
    return f"IB {code} [{exp.category}]: {text} -- {exp.action}"


def all_codes() -> list[Explanation]:
    """Every code in the table, in ascending order."""
    return [_TABLE[code] for code in sorted(_TABLE)]

"""Account reports of the simulated Gateway: positions, portfolio, account values and summary.

Serves the subscription requests reqPositions (61/64), reqAccountUpdates (6),
reqAccountUpdatesMulti (76/77) and reqAccountSummary (62/63) from the broker's `AccountBook`s,
and pushes fresh values to every subscriber when a fill changes an account
(`account_changed`). Between fills, a price move of a held instrument re-sends the account's
values and portfolio at most every `refresh_interval` seconds (IB: every 3 minutes).
Subscriptions belong to a session and end with it.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ibhub.sim import broker_messages as msg
from ibhub.sim.ledger import BASE_CURRENCY, AccountBook

if TYPE_CHECKING:
    from ibhub.sim.broker import Broker, SessionLike

log = logging.getLogger(__name__)

# Tags without a currency (IB sends '' as their currency).
_PLAIN_TAGS = {"Cushion", "Leverage", "DayTradesRemaining", "DayTradesRemainingT+1",
               "DayTradesRemainingT+2", "DayTradesRemainingT+3", "DayTradesRemainingT+4",
               "LookAheadNextChange", "HighestSeverity", "AccountType", "AccountCode",
               "AccountOrGroup"}
_LEDGER_TAGS = ("CashBalance", "TotalCashBalance", "NetLiquidationByCurrency",
                "StockMarketValue", "OptionMarketValue", "FuturesPNL", "UnrealizedPnL",
                "RealizedPnL", "ExchangeRate", "AccruedCash", "SettledCash")


def _fmt(tag: str, value: float) -> str:
    if tag in ("Cushion", "Leverage"):
        return f"{value:.6f}"
    return f"{value:.2f}"


class AccountFeed:
    """Subscriptions and snapshots of the account reports (see the module docstring)."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker
        self._positions: dict[int, SessionLike] = {}
        self._updates: dict[int, tuple[SessionLike, str]] = {}
        self._multi: dict[tuple[int, int], tuple[SessionLike, str, str]] = {}
        self._summary: dict[tuple[int, int], tuple[SessionLike, tuple[str, ...]]] = {}
        self.refresh_interval = 180.0  # seconds between price-driven refreshes (IB: 3 min)
        self._last_push: dict[str, float] = {}  # account -> monotonic time of its last push

    # ---- what an account reports ----------------------------------------------------------

    def _books(self, account: str) -> list[AccountBook]:
        accounts = self._broker.accounts
        if account in ("", "All", "ALL"):
            return list(accounts.values())
        book = accounts.get(account)
        return [book] if book is not None else []

    def account_rows(self, book: AccountBook) -> list[tuple[str, str, str]]:
        """(key, value, currency) as reqAccountUpdates / reqAccountUpdatesMulti report them."""
        values = book.values(self._broker.price_of)
        rows = [("AccountCode", book.name, ""), ("AccountType", "INDIVIDUAL", ""),
                ("Currency", BASE_CURRENCY, BASE_CURRENCY),
                ("RealCurrency", BASE_CURRENCY, BASE_CURRENCY)]
        for key, value in values.items():
            rows.append((key, _fmt(key, value), "" if key in _PLAIN_TAGS else BASE_CURRENCY))
        ledger = {**values, "TotalCashBalance": values["TotalCashValue"],
                  "NetLiquidationByCurrency": values["NetLiquidation"], "ExchangeRate": 1.0}
        for key in _LEDGER_TAGS:
            if key in ledger:
                rows.append((key, _fmt(key, ledger[key]), "BASE"))
        rows.append(("DayTradesRemaining", "-1", ""))
        return rows

    def summary_rows(self, book: AccountBook, tags: Sequence[str]) -> list[tuple[str, str, str]]:
        """(tag, value, currency) for reqAccountSummary's tag list (unknown tags are skipped)."""
        values = book.values(self._broker.price_of)
        extra = {"AccountType": "INDIVIDUAL", "HighestSeverity": "", "LookAheadNextChange": "0",
                 **{k: "-1" for k in _PLAIN_TAGS if k.startswith("DayTradesRemaining")}}
        ledger = {**values, "TotalCashBalance": values["TotalCashValue"],
                  "NetLiquidationByCurrency": values["NetLiquidation"], "ExchangeRate": 1.0}
        rows: list[tuple[str, str, str]] = []
        for tag in tags:
            if tag.startswith("$LEDGER"):
                # $LEDGER = base currency, $LEDGER:ALL = every currency, $LEDGER:USD = that one
                suffix = tag.partition(":")[2].upper()
                currencies = {"": ["BASE"], "ALL": ["BASE", BASE_CURRENCY],
                              BASE_CURRENCY: [BASE_CURRENCY]}.get(suffix, [])
                for cur in currencies:
                    rows += [(k, _fmt(k, ledger[k]), cur) for k in _LEDGER_TAGS if k in ledger]
            elif tag in values:
                rows.append((tag, _fmt(tag, values[tag]),
                             "" if tag in _PLAIN_TAGS else BASE_CURRENCY))
            elif tag in extra:
                rows.append((tag, extra[tag], ""))
        return rows

    def _portfolio_msgs(self, book: AccountBook, con_ids: Sequence[int] | None = None
                        ) -> list[list[object]]:
        out = []
        universe = self._broker.universe
        for cid, h in book.holdings.items():
            if con_ids is not None and cid not in con_ids:
                continue
            inst = universe.by_con_id(cid)
            if inst is None:
                continue
            price = self._broker.price_of(cid)
            v = book.valuation(h, price)
            out.append(msg.portfolio(book.name, inst, h.qty, price, v.market_value, h.avg_cost,
                                     v.unrealized_pnl, h.realized_pnl))
        return out

    def _position_msgs(self, book: AccountBook, con_ids: Sequence[int] | None = None,
                       include_flat: bool = False) -> list[list[object]]:
        out = []
        universe = self._broker.universe
        for cid, h in book.holdings.items():
            if (con_ids is not None and cid not in con_ids) or (h.qty == 0 and not include_flat):
                continue
            inst = universe.by_con_id(cid)
            if inst is not None:
                out.append(msg.position(book.name, inst, h.qty, h.avg_cost))
        return out

    # ---- requests ---------------------------------------------------------------------------

    def req_positions(self, session: SessionLike, fields: Sequence[str]) -> None:
        for book in self._broker.accounts.values():
            for m in self._position_msgs(book):
                session.send(*m)
        session.send(*msg.position_end())
        self._positions[id(session)] = session

    def cancel_positions(self, session: SessionLike, fields: Sequence[str]) -> None:
        self._positions.pop(id(session), None)

    def req_account_updates(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[6, 2, subscribe, acctCode]: values, portfolio, time, end; then updates on fills."""
        subscribe = fields[2] == "1"
        if not subscribe:
            self._updates.pop(id(session), None)
            return
        account = fields[3] if len(fields) > 3 and fields[3] else self._broker.config.accounts[0]
        book = self._broker.accounts.get(account)
        if book is None:
            session.send_error(-1, 321, f"Error validating request:-'bN' : cause - Invalid "
                                        f"account code {account!r}")
            return
        self._updates[id(session)] = (session, account)
        self._send_updates(session, book, None)
        session.send(*msg.account_download_end(account))

    def _send_updates(self, session: SessionLike, book: AccountBook,
                      con_ids: Sequence[int] | None) -> None:
        for key, value, cur in self.account_rows(book):
            session.send(*msg.account_value(key, value, cur, book.name))
        for m in self._portfolio_msgs(book, con_ids):
            session.send(*m)
        session.send(*msg.account_time(datetime.now(UTC)))

    def req_account_updates_multi(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[76, 1, reqId, account, modelCode, ledgerAndNLV]."""
        req_id = int(fields[2])
        account = fields[3] if len(fields) > 3 else ""
        model = fields[4] if len(fields) > 4 else ""
        books = self._books(account)
        if not books:
            session.send_error(req_id, 321, f"Error validating request:-'cb' : cause - Invalid "
                                            f"account code {account!r}")
            return
        for book in books:
            self._send_multi(session, req_id, book, model)
        session.send(*msg.account_update_multi_end(req_id))
        self._multi[(id(session), req_id)] = (session, account, model)

    def _send_multi(self, session: SessionLike, req_id: int, book: AccountBook,
                    model: str) -> None:
        for key, value, cur in self.account_rows(book):
            session.send(*msg.account_update_multi(req_id, book.name, model, key, value, cur))

    def cancel_account_updates_multi(self, session: SessionLike, fields: Sequence[str]) -> None:
        self._multi.pop((id(session), int(fields[2])), None)

    def req_account_summary(self, session: SessionLike, fields: Sequence[str]) -> None:
        """[62, 1, reqId, group, tags]: rows for every account ('All' group), then the end."""
        req_id = int(fields[2])
        tags = tuple(t.strip() for t in (fields[4] if len(fields) > 4 else "").split(",")
                     if t.strip())
        for book in self._broker.accounts.values():
            for tag, value, cur in self.summary_rows(book, tags):
                session.send(*msg.account_summary(req_id, book.name, tag, value, cur))
        session.send(*msg.account_summary_end(req_id))
        self._summary[(id(session), req_id)] = (session, tags)

    def cancel_account_summary(self, session: SessionLike, fields: Sequence[str]) -> None:
        self._summary.pop((id(session), int(fields[2])), None)

    # ---- pushes -------------------------------------------------------------------------------

    def on_quote(self, con_id: int) -> None:
        """Market listener hook: refresh accounts holding `con_id` once per refresh_interval."""
        if not (self._updates or self._multi or self._summary):
            return
        now = time.monotonic()
        for name, book in self._broker.accounts.items():
            h = book.holdings.get(con_id)
            if h is not None and h.qty and now - self._last_push.get(name, -math.inf) >= \
                    self.refresh_interval:
                self._push_values(name)

    def account_changed(self, account: str, con_id: int) -> None:
        """A fill changed `account`: push the changed position and values to the subscribers."""
        book = self._broker.accounts[account]
        for session in list(self._positions.values()):
            for m in self._position_msgs(book, [con_id], include_flat=True):
                session.send(*m)
        self._push_values(account)

    def _push_values(self, account: str) -> None:
        """Account values, portfolio and summary rows of `account` to their subscribers."""
        book = self._broker.accounts[account]
        self._last_push[account] = time.monotonic()
        for session, acct in list(self._updates.values()):
            if acct == account:
                self._send_updates(session, book, None)
        for (_, req_id), (session, acct, model) in list(self._multi.items()):
            if acct in ("", "All", "ALL", account):
                self._send_multi(session, req_id, book, model)
        for (_, req_id), (session, tags) in list(self._summary.items()):
            for tag, value, cur in self.summary_rows(book, tags):
                session.send(*msg.account_summary(req_id, account, tag, value, cur))

    def drop_session(self, session: SessionLike) -> None:
        sid = id(session)
        self._positions.pop(sid, None)
        self._updates.pop(sid, None)
        for key in [k for k in self._multi if k[0] == sid]:
            del self._multi[key]
        for key in [k for k in self._summary if k[0] == sid]:
            del self._summary[key]

    def describe(self) -> dict[str, Any]:
        """Subscription counts, for logs and tests."""
        return {"positions": len(self._positions), "updates": len(self._updates),
                "multi": len(self._multi), "summary": len(self._summary)}

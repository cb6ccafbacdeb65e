"""Account summary and PnL through the front door: served from the hub's shared
subscriptions and kept updating, as a Gateway does.

* ``reqAccountSummary`` (62) answers from the hub's one upstream ``reqAccountSummary``
  with IB's tag semantics (:mod:`ibhub.orders.account_summary`: plain tags, ``$LEDGER``,
  ``$LEDGER:ALL``, ``$LEDGER:CCY``; group "All" or one account), ends with
  accountSummaryEnd, then sends each row again when the Gateway updates it, until
  ``cancelAccountSummary`` (63).
* ``reqAccountUpdatesMulti`` (76) answers the account's values (every managed account
  for "" / "All"), ends with accountUpdateMultiEnd, then sends each changed value again
  until ``cancelAccountUpdatesMulti`` (77).
* ``reqPnL`` (92) / ``reqPnLSingle`` (94) answer from the hub's shared PnL (one upstream
  subscription per account and per position, ``ibhub.ib.account_feed``) and stream each
  change until ``cancelPnL`` (93) / ``cancelPnLSingle`` (95). A position the hub does not
  follow yet is subscribed upstream on the first request (shared from then on). An
  account that is not managed gets IB's 321 on the request id.

Without an order service (trading not wired) summary requests still end; PnL requests get
error 321 saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ibhub.frontdoor.session import DownstreamSession, Handler
from ibhub.orders.account import PnL
from ibhub.orders.account_summary import matches, wants
from ibhub.protocol import AccountValueEvent
from ibhub.sim import broker_messages as msgs
from ibhub.tws.codec import UNSET_DOUBLE

if TYPE_CHECKING:
    from ibhub.frontdoor.server import FrontDoor

INVALID: int = 321


@dataclass
class _Summary:
    session: DownstreamSession
    req_id: int
    plain: frozenset[str]
    ledger: frozenset[str] | None
    group: str


@dataclass
class _Multi:
    session: DownstreamSession
    req_id: int
    account: str  # "" = every account
    model: str


@dataclass
class _PnL:
    session: DownstreamSession
    req_id: int
    account: str
    con_id: int  # 0: reqPnL


class AccountStreams:
    def __init__(self, door: FrontDoor) -> None:
        self._door = door
        self._summaries: dict[tuple[int, int], _Summary] = {}  # (session no, reqId)
        self._pnls: dict[tuple[int, int], _PnL] = {}
        self._multis: dict[tuple[int, int], _Multi] = {}
        self._following: Any = None  # the AccountBook whose listeners are ours

    def handlers(self) -> dict[int, Handler]:
        return {62: self.req_summary, 63: self.cancel_summary, 92: self.req_pnl,
                93: self.cancel_pnl, 94: self.req_pnl_single, 95: self.cancel_pnl,
                76: self.req_updates_multi, 77: self.cancel_updates_multi}

    def _cache(self) -> Any:
        service = self._door.order_service()
        book = None if service is None else service.account
        if book is not None and book is not self._following:
            book.summary_listeners.append(self._on_summary)
            book.pnl_listeners.append(self._on_pnl)
            self._following = book
        return book

    def stop(self) -> None:
        book, self._following = self._following, None
        if book is not None:
            book.summary_listeners.remove(self._on_summary)
            book.pnl_listeners.remove(self._on_pnl)

    def session_gone(self, s: DownstreamSession) -> None:
        for table in (self._summaries, self._pnls, self._multis):
            for key in [k for k in table if k[0] == s.number]:
                del table[key]

    # ------------------------------------------------------------------ summary

    def req_summary(self, s: DownstreamSession, f: list[str]) -> None:
        """[62, 1, reqId, group, tags]"""
        rid = int(f[2])
        group = f[3] if len(f) > 3 else "All"
        plain, ledger = wants((f[4] if len(f) > 4 else "").split(","))
        sub = _Summary(s, rid, plain, ledger, group or "All")
        book = self._cache()
        if book is not None:
            base = book.base_currencies()
            for (account, tag, cur), value in sorted(book.summary_cache().items()):
                if matches((account, tag, cur), base, plain, ledger, sub.group):
                    s.send_fields(msgs.account_summary(rid, account, tag, value, cur))
        s.send_fields(msgs.account_summary_end(rid))
        self._summaries[(s.number, rid)] = sub

    def cancel_summary(self, s: DownstreamSession, f: list[str]) -> None:
        self._summaries.pop((s.number, int(f[2])), None)

    def _on_summary(self, account: str, tag: str, value: str, currency: str) -> None:
        if not self._summaries or self._following is None:
            return
        base = self._following.base_currencies()
        for sub in list(self._summaries.values()):
            if matches((account, tag, currency), base, sub.plain, sub.ledger, sub.group):
                sub.session.send_fields(msgs.account_summary(sub.req_id, account, tag, value,
                                                             currency))

    # ------------------------------------------------------------------ account values

    def req_updates_multi(self, s: DownstreamSession, f: list[str]) -> None:
        """[76, 1, reqId, account, modelCode, ledgerAndNLV]"""
        rid, account = int(f[2]), f[3] if len(f) > 3 else ""
        model = f[4] if len(f) > 4 else ""
        every = account in ("", "All", "ALL")
        book = self._cache()
        for v in (book.values("" if every else account) if book is not None else ()):
            s.send_fields(msgs.account_update_multi(rid, v.account, model, v.key, v.value,
                                                    v.currency))
        s.send_fields(msgs.account_update_multi_end(rid))
        self._multis[(s.number, rid)] = _Multi(s, rid, "" if every else account, model)

    def cancel_updates_multi(self, s: DownstreamSession, f: list[str]) -> None:
        self._multis.pop((s.number, int(f[2])), None)

    def on_event(self, ev: Any) -> None:
        """An account value changed in the hub's cache: to the Multi subscribers."""
        if not self._multis or not isinstance(ev, AccountValueEvent):
            return
        for sub in list(self._multis.values()):
            if sub.account in ("", ev.account):
                sub.session.send_fields(msgs.account_update_multi(
                    sub.req_id, ev.account, sub.model, ev.key, ev.value, ev.currency))

    # ------------------------------------------------------------------ PnL

    def req_pnl(self, s: DownstreamSession, f: list[str]) -> None:
        """[92, reqId, account, modelCode]"""
        self._start(s, int(f[1]), f[2] if len(f) > 2 else "", 0)

    def req_pnl_single(self, s: DownstreamSession, f: list[str]) -> None:
        """[94, reqId, account, modelCode, conId]"""
        con_id = int(f[4]) if len(f) > 4 and f[4].lstrip("-").isdigit() else 0
        if con_id <= 0:
            s.send_error(int(f[1]), INVALID, "Error validating request.-'cv' : cause - "
                                             "reqPnLSingle needs a contract id (conId)")
            return
        self._start(s, int(f[1]), f[2] if len(f) > 2 else "", con_id)

    def cancel_pnl(self, s: DownstreamSession, f: list[str]) -> None:
        self._pnls.pop((s.number, int(f[1])), None)

    def _start(self, s: DownstreamSession, rid: int, account: str, con_id: int) -> None:
        book = self._cache()
        service = self._door.order_service()
        if book is None or service is None:
            s.send_error(rid, INVALID, "Error validating request: PnL is served from the "
                                       "hub's account data, and trading is not wired on "
                                       "this hub (no order service)")
            return
        known = self._door.accounts_known
        if account not in known:
            s.send_error(rid, INVALID, f"Error validating request.-'cu' : cause - Invalid "
                                       f"account code {account!r} (managed: "
                                       f"{', '.join(known) or 'none yet'})")
            return
        self._pnls[(s.number, rid)] = _PnL(s, rid, account, con_id)
        current = book.pnl.get((account, con_id))
        if current is not None:
            s.send_fields(_message(rid, current))
        elif con_id:
            feed = getattr(service.gateway, "account_feed", None)
            if feed is not None:
                feed.want_single(account, con_id)  # shared from now on

    def _on_pnl(self, pnl: PnL) -> None:
        for sub in list(self._pnls.values()):
            if sub.account == pnl.account and sub.con_id == pnl.con_id:
                sub.session.send_fields(_message(sub.req_id, pnl))


def _message(rid: int, p: PnL) -> list[object]:
    """pnl (94) / pnlSingle (95); an unknown figure goes out as IB's unset double."""
    def num(x: float) -> object:
        return x if x == x else UNSET_DOUBLE
    if p.con_id:
        return [95, rid, num(p.position), num(p.daily), num(p.unrealized), num(p.realized),
                num(p.value)]
    return [94, rid, num(p.daily), num(p.unrealized), num(p.realized)]

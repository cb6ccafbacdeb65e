"""What-if orders: IB's margin and commission estimate for an order that is never placed.

A :class:`~ibhub.protocol.WhatIfOrder` passes the same checks as a real order (role,
live-trading guard, order-type fields, price band, the lease's rate limit: it is an
order message at the Gateway all the same) and then waits its turn in the upstream
budget like an order. Nothing is journaled and no order event is published: the
answer is one :class:`~ibhub.protocol.WhatIfReply`, or an
:class:`~ibhub.protocol.OrderRejected` naming the hub's or IB's reason. It is a
placeOrder with a new order id all the same, so it takes its id from the order book and
its place in the book's :class:`~ibhub.orders.id_line.IdLine`: TWS refuses an order
placed later with a lower id (103), and an id the IB library picked when the what-if
was written would be above those of orders accepted earlier and still being journaled.

Decisions: a bracket or a child (``take_profit`` / ``stop_loss`` /
``parent_order_id``) is refused (ask per leg: IB estimates one order at a time); an
OCA group is not sent (a what-if joins no group); ``client_order_id`` is not needed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import msgspec

from ibhub.orders.id_line import IdLine
from ibhub.orders.manager import UnknownContract
from ibhub.orders.order_types import params_of, uses
from ibhub.orders.port import OrderFields, UpstreamRefused, UpstreamWhatIf
from ibhub.orders.risk import RiskGate
from ibhub.protocol import (
    ContractSpec,
    OrderRejected,
    RejectReason,
    WhatIfOrder,
    WhatIfReply,
)
from ibhub.tws.pacing import Pacer, PacerBusy, Priority

log = logging.getLogger(__name__)

#: the upstream call: (order id, contract, fields) -> a future of the Gateway's
#: orderState; the placeOrder is written before it returns (ConnectionError when down)
StartFn = Callable[[int, ContractSpec, OrderFields], "asyncio.Future[UpstreamWhatIf]"]


class WhatIfService:
    def __init__(self, *, risk: RiskGate, resolver: Any, pacer: Pacer,
                 ask: Callable[[], StartFn | None], allocate_id: Callable[[], int],
                 id_line: IdLine, timeout: float = 10.0) -> None:
        """``resolver``: the order manager's ContractResolver (qualify, last_price);
        ``ask()``: the upstream what-if call, None while no Gateway session is attached;
        ``allocate_id`` and ``id_line``: the order book's (module doc)."""
        self._risk = risk
        self._resolver = resolver
        self._pacer = pacer
        self._ask = ask
        self._allocate_id = allocate_id
        self._line = id_line
        self.timeout = timeout

    def _reject(self, rid: int, reason: str, message: str, ib_code: int = 0) -> OrderRejected:
        return OrderRejected(id=rid, client_order_id="", reason=reason, message=message,
                             ib_code=ib_code)

    async def check(self, caller: Any, req: WhatIfOrder) -> WhatIfReply | OrderRejected:
        """``caller``: the order manager's Caller (lease, owner, role)."""
        if req.take_profit is not None or req.stop_loss is not None or req.parent_order_id:
            return self._reject(req.id, RejectReason.BAD_ORDER_ATTRIBUTE,
                                "a what-if order is one order: ask for each bracket leg "
                                "separately (no take_profit / stop_loss / parent_order_id)")
        # the checks of a real order; its client_order_id is the only thing not needed
        probe = msgspec.structs.replace(req, client_order_id=req.client_order_id or "what-if")
        refusal = self._risk.check_static(probe, role=caller.role)
        if refusal is not None:
            return self._reject(req.id, refusal.reason, refusal.message)
        ask = self._ask()
        if ask is None:
            return self._reject(req.id, RejectReason.UPSTREAM_DOWN,
                                "the hub is not connected to the Gateway")
        try:
            info = await self._resolver.qualify(req.contract)
        except UnknownContract as exc:
            return self._reject(req.id, exc.reason, str(exc))
        refusal = self._risk.check_band_and_rate(
            probe, lease=caller.lease, last_price=self._resolver.last_price(info.con_id),
            sec_type=info.sec_type)
        if refusal is not None:
            return self._reject(req.id, refusal.reason, refusal.message)
        spec = ContractSpec(symbol=info.symbol, sec_type=info.sec_type,
                            exchange=req.contract.exchange or info.exchange,
                            currency=info.currency, con_id=info.con_id)
        try:
            state = await self._ask_in_line(ask, spec, self.fields(req))
        except UpstreamRefused as exc:
            return self._reject(req.id, RejectReason.IB_REJECTED,
                                f"IB {exc.code}: {exc.message}", ib_code=exc.code)
        except PacerBusy as exc:
            return self._reject(req.id, RejectReason.BUSY, str(exc))
        except TimeoutError:
            return self._reject(req.id, RejectReason.UPSTREAM_DOWN,
                                f"no what-if answer from the Gateway within {self.timeout:g} s")
        except ConnectionError as exc:
            return self._reject(req.id, RejectReason.UPSTREAM_DOWN,
                                f"the Gateway session dropped: {exc}")
        m = state.margins
        return WhatIfReply(
            id=req.id, status=state.status,
            init_margin_before=m[0], maint_margin_before=m[1], equity_with_loan_before=m[2],
            init_margin_change=m[3], maint_margin_change=m[4], equity_with_loan_change=m[5],
            init_margin_after=m[6], maint_margin_after=m[7], equity_with_loan_after=m[8],
            commission=state.commission, min_commission=state.min_commission,
            max_commission=state.max_commission,
            commission_currency=state.commission_currency, warning_text=state.warning_text,
        )  # fmt: skip

    async def _ask_in_line(self, ask: StartFn, spec: ContractSpec,
                           fields: OrderFields) -> UpstreamWhatIf:
        """Take an order id and a place in the id line, then the upstream budget (room
        for it is held from the start, so a full queue refuses it ``busy`` at once), then
        the Gateway's answer; all within ``timeout``."""
        slot = self._pacer.reserve(Priority.ORDER)  # PacerBusy: the queue is full
        queued: asyncio.Future[asyncio.Future[asyncio.Future[UpstreamWhatIf]]] = (
            asyncio.get_running_loop().create_future())
        ticket = None
        try:
            order_id = self._allocate_id()  # ConnectionError: the session dropped
            ticket = self._line.join()

            def go() -> None:
                if not queued.cancelled():  # else the caller gave up as its turn came
                    queued.set_result(self._pacer.submit(
                        Priority.ORDER, partial(ask, order_id, spec, fields),
                        reservation=slot, label=f"whatIf {order_id} {spec.symbol}"))

            self._line.ready(ticket, go)
            async with asyncio.timeout(self.timeout):
                return await (await (await queued))
        finally:  # none of these has an effect on a what-if answered
            if ticket is not None:
                self._line.leave(ticket)
            slot.release()
            _abandon(queued)

    @staticmethod
    def fields(req: WhatIfOrder) -> OrderFields:
        otype = req.order_type
        return OrderFields(
            action=req.action, quantity=req.quantity, order_type=otype,
            limit_price=req.limit_price if uses(otype, "limit_price") else None,
            stop_price=req.stop_price if uses(otype, "stop_price") else None,
            tif=req.tif, outside_rth=req.outside_rth, account=req.account,
            algo_strategy=req.algo_strategy, algo_params=tuple(req.algo_params.items()),
            algo_id=req.algo_id, params=tuple(sorted(params_of(req).items())),
        )  # fmt: skip


def _abandon(queued: asyncio.Future[asyncio.Future[asyncio.Future[UpstreamWhatIf]]]) -> None:
    """What a caller that gave up leaves behind: its what-if withdrawn from the pacer if
    it still waits there, else its answer cancelled if it is still to come."""
    if not queued.done() or queued.cancelled():
        return
    sent = queued.result()
    if not sent.cancel() and not sent.cancelled() and sent.exception() is None:
        sent.result().cancel()

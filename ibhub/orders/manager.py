"""The order manager's front door: place, modify and cancel requests from scripts.

One :class:`OrderManager` per hub, composed of the shared state (:class:`OrderStore`) and
the upstream side (:class:`OrderUpdates`, reached as ``book.updates``). For a new order:

1. **Idempotency first.** (owner, client_order_id) maps to at most one order. A retry
   gets the existing order with ``duplicate=True`` (even if the rate limit would now
   refuse it); the same id with *different* fields is refused
   (``client_order_id_reused``) rather than answered with another order.
2. **Risk** (:mod:`ibhub.orders.risk`): field, permission and live-trading checks before the
   contract lookup; price band and rate limit after it. A refused order never reaches
   the Gateway.
3. **Room upstream, or ``busy``.** An order that could not reach the Gateway within
   ``max_order_delay`` seconds (what waits in the pacer ahead of it, at its rate), or
   whose lease already has its share of the queue, is refused at once with ``busy``
   rather than acknowledged and left waiting; the room is held while it is journaled.
4. **Journal, then send, then reply.** The order (a bracket: parent and children in one
   transaction) is committed before anything goes upstream; the send is queued on the
   pacer at order priority and the reply says ``PendingSubmit``. What IB says next
   arrives as events on ``order.<lease>``.

**Nothing about an order reaches the Gateway before the order itself.** Every send about
one order family (a bracket's parent and legs, a child placed under a parent) carries
the family's pacer key, and the pacer sends one key's items in the order they were
queued. Until its placeOrder is written to the socket an order is *unsent*
(``_unsent``, from registration on, so also between the reply and the call_soon that
queues it): a cancel then withdraws it (with its unsent children) and nothing is ever
sent: it ends ``Cancelled`` locally, saying it was cancelled before it was sent; a
modify replaces the fields the queued placeOrder will carry (one placeOrder, the newest
fields). A cancel of an order already written goes after it on the same socket, so the
Gateway sees them in order. Cancel-all and global cancel do the same for every order
they touch; a global cancel withdraws every unsent placement before reqGlobalCancel.
A cancel is decided the moment it arrives (after the order's own journal insert, if
that is still being committed), never held up by the journal.

IB requires strictly increasing order ids in one id space: ids come from the upstream
session's allocator, raised above the journal's highest id after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, Final, Protocol

import msgspec

from ibhub.orders import order_types
from ibhub.orders.id_line import IdLine, Ticket
from ibhub.orders.journal import JournalError, OrderRecord
from ibhub.orders.journal_writer import JournalWriter
from ibhub.orders.order_types import uses
from ibhub.orders.port import (
    OrderFields,
    OrderUpstream,
    decode_algo_params,
    encode_algo_params,
    make_oca_group,
    make_order_ref,
)
from ibhub.orders.risk import OrderParams, Refusal, RiskGate, Role
from ibhub.orders.store import (
    EPS,
    EXTERNAL,
    MODIFY_FIELDS,
    TERMINAL,
    EventSink,
    OrderStore,
    op_insert,
    op_note,
    op_update,
    snapshot,
)
from ibhub.orders.updates import OrderUpdates
from ibhub.protocol import (
    CancelAllOrders,
    CancelOrder,
    CancelRequested,
    ContractInfo,
    ContractSpec,
    ExecutionsReply,
    GetCompletedOrders,
    GetExecutions,
    GetOpenOrders,
    GlobalCancel,
    ModifyOrder,
    OrderAccepted,
    OrderRejected,
    OrdersReply,
    PlaceOrder,
    RejectReason,
    Reply,
)
from ibhub.tws.pacing import Pacer, PacerBusy, Priority, Reservation

log = logging.getLogger(__name__)

NOT_SENT: Final = (
    "cancelled before it was sent to the Gateway: the hub withdrew it from its upstream "
    "queue, so IB never saw it"
)
MODIFY_WITHDRAWN: Final = (
    "modification withdrawn before it was sent to the Gateway: the order is being "
    "cancelled; the Gateway keeps the order as it was"
)
DEFAULT_MAX_ORDER_DELAY: Final = 2.0  # seconds an order may wait in the pacer

@dataclass(frozen=True)
class Caller:
    """Who sent a request: their lease, script name (the order owner) and role."""

    lease: str
    owner: str
    role: str = Role.TRADER


#: an order request's handler: ``fn(caller, req)`` -> the reply
OrderHandler = Callable[[Caller, Any], Awaitable[Reply]]


class UnknownContract(LookupError):
    """The contract did not qualify (the message says why; ``reason`` is the RejectReason)."""

    def __init__(self, message: str, reason: str = RejectReason.UNKNOWN_CONTRACT) -> None:
        super().__init__(message)
        self.reason = reason


class ContractResolver(Protocol):
    async def qualify(self, spec: ContractSpec) -> ContractInfo:
        """The one contract ``spec`` names; raises :class:`UnknownContract`."""
        ...

    def last_price(self, con_id: int) -> float | None:
        """The last known price, for the price band; None if unknown."""
        ...


def fingerprint(req: PlaceOrder) -> str:
    """The order a request describes, without the per-attempt parts (request id, lease).

    Fields appended to PlaceOrder later are left out while at their default, so an order
    journaled by an older hub keeps its fingerprint (a retry stays a retry)."""
    data = msgspec.to_builtins(msgspec.structs.replace(req, id=0, lease=""))
    for name in _LATER_FIELDS:
        if data.get(name) == _PLACE_DEFAULTS[name]:
            del data[name]
    return msgspec.json.encode(data).decode()


_LATER_FIELDS = (
    "oca_group", "oca_type", "order_ref", "algo_strategy", "algo_params", "algo_id",
    *order_types.PARAM_FIELDS, "stop_loss_limit",
)  # fmt: skip
_PLACE_DEFAULTS = msgspec.to_builtins(
    PlaceOrder(id=0, lease="", client_order_id="", contract=ContractSpec(symbol="X"),
               action="BUY", quantity=1.0)
)  # fmt: skip


@dataclass(eq=False)
class _Unsent:
    """One placeOrder send not written to the Gateway yet: a new order (a bracket: the
    parent and its legs, in send order) or a modification. Its fields are snapshots of
    committed state; a modify that arrives meanwhile replaces them."""

    recs: list[OrderRecord]
    fields: dict[int, OrderFields]
    modify: bool
    reservation: Reservation | None = None
    future: asyncio.Future[None] | None = None  # the pacer's, once queued
    written: list[OrderRecord] = field(default_factory=list)
    ticket: Ticket | None = None  # a placement's place in the id line


def _log_send_failure(fut: asyncio.Future[None]) -> None:
    """A cancel that could not be sent (the session dropped): the order keeps its state
    and the script may cancel again; the pacer already logged the reason."""
    if not fut.cancelled() and fut.exception() is not None:
        log.warning("a cancel did not reach the Gateway: %s", fut.exception())


class OrderManager:
    def __init__(
        self,
        *,
        upstream: OrderUpstream,
        writer: JournalWriter,
        risk: RiskGate,
        pacer: Pacer,
        resolver: ContractResolver,
        publish: EventSink,
        store: OrderStore | None = None,
        max_order_delay: float | None = DEFAULT_MAX_ORDER_DELAY,
        send_at_commit: bool = False,
    ) -> None:
        """``max_order_delay``: seconds a place or modify may expect to wait in the pacer
        before it is refused ``busy`` (None: never refused for the delay).
        ``send_at_commit``: hand a new order to the pacer when its journal insert is
        committed, before its fsync, instead of after its reply (docs/orders.md,
        "Durability")."""
        self._up = upstream
        self.send_at_commit = send_at_commit
        self.max_order_delay = max_order_delay
        self.risk = risk
        self._pacer = pacer
        self._resolver = resolver
        self.store = store or OrderStore(writer, publish)
        self.updates = OrderUpdates(self.store, upstream)
        self._pending: dict[int, asyncio.Future[None]] = {}
        # Orders in flight: registered by place() (being journaled, then waiting in the
        # pacer) and not sent (or failed) yet. Reconciliation after a (re)connect must
        # not judge them "never sent": they are about to be.
        self.queued: set[int] = set()
        self._watchers: list[set[int]] = []
        # Order id -> its placeOrder (placement or modification) not written upstream yet.
        self._unsent: dict[int, _Unsent] = {}
        # New placements (and what-ifs) go to the pacer in the order of their ids.
        self.id_line = IdLine()
        self._highest_placed = 0  # the highest new order id written upstream so far

    @property
    def unsent(self) -> list[int]:
        """Order ids whose placeOrder (or modification) has not been written upstream."""
        return sorted(self._unsent)

    def watch_in_flight(self) -> set[int]:
        """The orders in flight now, in a set that also collects every order entering
        flight until :meth:`unwatch`: reconciliation compares the book with a snapshot
        of the Gateway taken meanwhile, which cannot know an order sent after it."""
        seen = set(self.queued)
        self._watchers.append(seen)
        return seen

    def unwatch(self, seen: set[int]) -> None:
        """Stop collecting into ``seen``. By identity: ``list.remove`` compares sets by
        value, so with two reconciliations running (a reconnect during one's 10 s
        completed-orders wait) it removed the *other*, equal, set, which then stopped
        collecting, and the second unwatch raised ValueError."""
        for i, watcher in enumerate(self._watchers):
            if watcher is seen:
                del self._watchers[i]
                return

    def _in_flight(self, order_id: int) -> None:
        self.queued.add(order_id)
        for seen in self._watchers:
            seen.add(order_id)

    def bind_owner(self, owner: str, lease: str, *, release: bool = True) -> None:
        """Route ``owner``'s order events to ``order.<lease>`` (call on Hello); see
        :meth:`OrderStore.bind_owner` for events held while the owner was away."""
        self.store.bind_owner(owner, lease, release=release)

    def lease_gone(self, lease: str) -> None:
        self.store.lease_gone(lease)
        self.risk.forget_lease(lease)

    @property
    def upstream_client_id(self) -> int:
        """The hub's own client id at the Gateway (what its orders show there)."""
        return self._up.client_id

    def handlers(self) -> dict[type, OrderHandler]:
        """Each order request type -> the method that answers it, ``fn(caller, req)``
        (the service registers them in the hub's request registry)."""
        return {
            PlaceOrder: self.place,
            ModifyOrder: self.modify,
            CancelOrder: self.cancel,
            CancelAllOrders: self.cancel_all,
            GlobalCancel: self.global_cancel,
            GetOpenOrders: self.open_orders,
            GetCompletedOrders: self.completed_orders,
            GetExecutions: self.executions,
        }

    async def open_orders(self, caller: Caller, req: GetOpenOrders) -> Reply:
        return self._orders(caller, req, working=True)

    async def completed_orders(self, caller: Caller, req: GetCompletedOrders) -> Reply:
        return self._orders(caller, req, working=False)

    def _orders(
        self, caller: Caller, req: GetOpenOrders | GetCompletedOrders, working: bool
    ) -> Reply:
        owner = self._scope(caller, req.id, req.scope)
        if isinstance(owner, OrderRejected):
            return owner
        return OrdersReply(id=req.id, orders=self.store.orders(owner, working=working))

    async def executions(self, caller: Caller, req: GetExecutions) -> Reply:
        owner = self._scope(caller, req.id, req.scope)
        if isinstance(owner, OrderRejected):
            return owner
        return ExecutionsReply(id=req.id, executions=self.store.executions(owner))

    def _scope(self, caller: Caller, req_id: int, scope: str) -> str | OrderRejected | None:
        """The owner a query covers ("mine": the caller's; "all", operators only: None)."""
        if scope == "mine":
            return caller.owner
        refusal = (self.risk.check_operator(caller.role, "scope='all'") if scope == "all"
                   else Refusal(RejectReason.FORBIDDEN,
                                f"scope must be 'mine' or 'all', not {scope!r}"))
        if refusal is None:
            return None
        return OrderRejected(id=req_id, client_order_id="", reason=refusal.reason,
                             message=refusal.message)

    def _reject(self, req_id: int, coid: str, refusal: Refusal, order_id: int = 0) -> OrderRejected:
        log.info("order request refused (%s): %s", refusal.reason, refusal.message)
        self.store.writer.write_then(
            op_note,
            (
                order_id,
                "refused",
                {"client_order_id": coid, "reason": refusal.reason, "message": refusal.message},
            ),
            lambda _result: None,
        )
        return OrderRejected(
            id=req_id,
            client_order_id=coid,
            reason=refusal.reason,
            message=refusal.message,
            order_id=order_id,
        )

    def _accepted(self, req_id: int, rec: OrderRecord, duplicate: bool) -> OrderAccepted:
        return OrderAccepted(
            id=req_id,
            order_id=rec.order_id,
            client_order_id=rec.client_order_id or "",
            status=rec.status,
            duplicate=duplicate,
            filled=rec.filled,
            remaining=rec.remaining,
            avg_fill_price=rec.avg_fill_price,
            child_order_ids=list(self.store.children.get(rec.order_id, ())),
        )

    async def _existing(
        self, caller: Caller, req: PlaceOrder
    ) -> OrderAccepted | OrderRejected | None:
        while True:
            rec = self.store.by_key.get((caller.owner, req.client_order_id))
            if rec is None:
                return None
            pending = self._pending.get(rec.order_id)
            if pending is None:
                break
            await asyncio.shield(pending)  # the first attempt is still being journaled
        if rec.fingerprint and rec.fingerprint != fingerprint(req):
            return self._reject(
                req.id,
                req.client_order_id,
                Refusal(
                    RejectReason.CLIENT_ORDER_ID_REUSED,
                    f"client_order_id {req.client_order_id!r} already names order "
                    f"{rec.order_id} with different fields; use a new id for a new order",
                ),
                rec.order_id,
            )
        return self._accepted(req.id, rec, duplicate=True)

    async def place(self, caller: Caller, req: PlaceOrder) -> OrderAccepted | OrderRejected:
        coid = req.client_order_id
        dup = await self._existing(caller, req)
        if dup is not None:
            return dup
        refusal = self.risk.check_static(req, role=caller.role)
        if refusal is None and req.parent_order_id:
            parent = self.store.by_id.get(req.parent_order_id)
            if parent is None or parent.owner != caller.owner:
                refusal = Refusal(
                    RejectReason.UNKNOWN_ORDER,
                    f"parent order {req.parent_order_id} is not one of your orders",
                )
            elif parent.status in TERMINAL:
                refusal = Refusal(
                    RejectReason.ORDER_DONE, f"parent order {parent.order_id} is {parent.status}"
                )
        if refusal is None:
            refusal = self._journal_refusal()
        if refusal is None and not self._up.is_connected():
            refusal = Refusal(
                RejectReason.UPSTREAM_DOWN,
                "the hub is not connected to the Gateway; retry with the same client_order_id",
            )
        if refusal is not None:
            return self._reject(req.id, coid, refusal)
        try:
            info = await self._resolver.qualify(req.contract)
        except UnknownContract as exc:
            return self._reject(req.id, coid, Refusal(exc.reason, str(exc)))
        dup = await self._existing(caller, req)  # a retry may have won the race meanwhile
        if dup is not None:
            return dup
        legs = 1 + (req.take_profit is not None) + (req.stop_loss is not None)
        # Before the rate limit, so a busy refusal costs the script no rate token.
        slot = self._room(caller, legs)
        if isinstance(slot, Refusal):
            return self._reject(req.id, coid, slot)
        last = self._resolver.last_price(info.con_id)
        refusal = self.risk.check_band_and_rate(
            req, lease=caller.lease, last_price=last, sec_type=info.sec_type
        )
        if refusal is not None:
            slot.release()
            return self._reject(req.id, coid, refusal)

        try:
            recs = self._new_records(caller, req, info)
        except ConnectionError as exc:  # the session dropped while the contract resolved
            slot.release()
            down = Refusal(RejectReason.UPSTREAM_DOWN, f"the Gateway session dropped: {exc}")
            return self._reject(req.id, coid, down)
        except BaseException:  # a bug: the room must not stay held for ever
            slot.release()
            raise
        parent = recs[0]
        pending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        unsent = _Unsent(recs, {}, modify=False, reservation=slot)
        for rec in recs:
            self.store.register(rec)
            self._in_flight(rec.order_id)
            self._unsent[rec.order_id] = unsent
        self._pending[parent.order_id] = pending
        unsent.ticket = ticket = self.id_line.join()  # in the step that took the ids
        # The send goes after the reply by default: the insert is committed and fsynced
        # (on the loop, docs/orders.md "The journal"), the reply goes out, and the next
        # loop turn queues the placeOrder (0.2-2 ms of ib_insync's CPU that would
        # otherwise delay the reply, and whose Gateway answers compete with the reply's
        # trip for the CPUs). With ``send_at_commit`` the placeOrder is handed to the
        # pacer the moment the insert is committed (in the WAL: a crash of the hub can no
        # longer lose it) and written before the fsync; the reply and the "acknowledged"
        # event still wait for the fsync. docs/orders.md, "Durability", says what is left
        # to an OS crash between the two. Either way the orders are in flight
        # (``queued``) and unsent (``_unsent``) from registration, so reconciliation
        # expects them and a cancel arriving before the send withdraws them.
        unsent.fields = {r.order_id: self._fields(r, placing=True) for r in recs}
        committed = False

        def on_commit(_result: object) -> None:
            nonlocal committed
            committed = True
            self._queue_send(unsent)

        # The reply and the "acknowledged" event describe the order as journaled: the
        # Gateway's answers to an early send may have moved the record on meanwhile, and
        # their events follow (the writer releases them after this commit's).
        rows = [replace(r) for r in recs]
        try:
            await self.store.writer.write(
                op_insert, rows, on_commit=on_commit if self.send_at_commit else None
            )
        except JournalError as exc:
            if committed:
                return self._fsync_failed(req.id, coid, unsent, rows, exc)
            slot.release()
            for rec in recs:
                self.store.unregister(rec)
                self.queued.discard(rec.order_id)
                self._unsent.pop(rec.order_id, None)
            self.id_line.leave(ticket)
            return self._reject(
                req.id,
                coid,
                Refusal(
                    RejectReason.INTERNAL, f"the order journal failed, nothing was sent: {exc}"
                ),
            )
        except BaseException:  # cancelled (hub stopping)
            if not committed:  # nothing will queue this send
                slot.release()
                self.id_line.leave(ticket)
            raise
        else:
            # The reply leaves first, the "acknowledged" events right behind it (the RPC
            # server's after-reply hook, same step; else the loop's next callback), then
            # the placeOrder on the next turn: building and publishing the events before
            # the reply cost the ack ~0.2 ms (docs/performance.md section 8.4, "The ack,
            # hub side"). Any event published before them (a cancel of this order by the
            # same caller, a failed send) publishes them first.
            if not committed:
                asyncio.get_running_loop().call_soon(self._queue_send, unsent)
            self.store.deliver_soon(
                [(rec, row, "acknowledged") for rec, row in zip(recs, rows, strict=True)])
        finally:
            del self._pending[parent.order_id]
            pending.set_result(None)
        return self._accepted(req.id, rows[0], duplicate=False)

    def _fsync_failed(
        self, req_id: int, coid: str, unsent: _Unsent, rows: list[OrderRecord], exc: JournalError
    ) -> OrderAccepted | OrderRejected:
        """The order was committed and handed to the pacer, then its fsync failed.

        Still waiting in the pacer: withdrawn, nothing went upstream, and the script is
        told so (refused, ``internal``). Written to the Gateway already: it works there,
        so it is never answered as refused: the script gets the acceptance and the
        "acknowledged" event says the journal failed. Either way the writer is marked
        failed and later orders are refused until the hub is restarted."""
        parent = rows[0]
        log.error("order %d: the journal's fsync failed after its commit: %s", parent.order_id, exc)
        if not unsent.written:
            for rec in list(unsent.recs):
                if self._unsent.get(rec.order_id) is unsent:
                    self._take_out(rec, unsent)
                    self.store.unregister(rec)
            return self._reject(
                req_id,
                coid,
                Refusal(
                    RejectReason.INTERNAL, f"the order journal failed, nothing was sent: {exc}"
                ),
                parent.order_id,
            )
        message = (
            f"sent to the Gateway, but the order journal could not make it durable ({exc}); "
            "the hub refuses new orders until it is restarted"
        )
        for rec, row in zip(unsent.recs, rows, strict=False):
            row.message = message
            self.store.deliver(rec, self.store.event(row, "acknowledged"))
        return self._accepted(req_id, parent, duplicate=False)

    def _journal_refusal(self) -> Refusal | None:
        """Why a place or modify is refused once the journal's fsync has failed (nothing
        new can be made durable), or None. Cancels are never refused for it."""
        failed = self.store.writer.failed
        if failed is None:
            return None
        return Refusal(
            RejectReason.INTERNAL,
            f"{failed}; the hub takes no new orders until it is "
            "restarted (orders already placed keep working at the Gateway)",
        )

    def _room(self, caller: Caller, cost: int) -> Reservation | Refusal:
        """Room in the pacer for a place or modify of ``caller``, held until it is queued:
        or a ``busy`` refusal saying why (queue full, the lease's share used, or a wait
        longer than ``max_order_delay``)."""
        try:
            return self._pacer.reserve(
                Priority.ORDER, cost=cost, owner=caller.lease, max_delay=self.max_order_delay
            )
        except PacerBusy as exc:
            return Refusal(RejectReason.BUSY, str(exc))

    def _family(self, rec: OrderRecord) -> tuple[str, int]:
        """The pacer key of everything about ``rec``: its top-most parent's id."""
        root = rec
        while root.parent_id:
            parent = self.store.by_id.get(root.parent_id)
            if parent is None:
                break
            root = parent
        return ("order", root.order_id)

    def _queue_send(self, unsent: _Unsent) -> None:
        """Hand an unsent placeOrder to the pacer: a modification at once, a new placement
        once everything that took a lower id has been handed over (:mod:`.id_line`)."""
        if unsent.ticket is None:
            self._submit(unsent)
        else:
            self.id_line.ready(unsent.ticket, partial(self._submit, unsent))

    def _submit(self, unsent: _Unsent) -> None:
        """Give ``unsent`` to the pacer (unless a cancel emptied it meanwhile)."""
        slot, unsent.reservation = unsent.reservation, None
        if not unsent.recs:
            if slot is not None:
                slot.release()
            return
        head = unsent.recs[0]
        what = "modify" if unsent.modify else "placeOrder"
        fut: asyncio.Future[None] = self._pacer.submit(
            Priority.ORDER,
            partial(self._write, unsent),
            cost=len(unsent.recs),
            key=self._family(head),
            reservation=slot,  # counts against the lease that asked for the room
            label=f"{what} {' '.join(str(r.order_id) for r in unsent.recs)}",
        )
        if not fut.done():
            unsent.future = fut
        fut.add_done_callback(partial(self._sent, unsent))

    def _write(self, unsent: _Unsent) -> None:
        """The pacer's send: write the placeOrder(s) to the Gateway session, now."""
        recs = list(unsent.recs)
        for rec in recs:
            if self._unsent.get(rec.order_id) is unsent:
                del self._unsent[rec.order_id]  # from here on it is the Gateway's to know
        for i, rec in enumerate(recs):
            fields = unsent.fields[rec.order_id]
            if not unsent.modify:  # a family transmits with its last leg (IB's convention)
                fields = replace(fields, transmit=i == len(recs) - 1)
                if rec.order_id <= self._highest_placed:  # _queue_send's order was broken
                    log.error(
                        "order %d goes upstream after order %d: the Gateway refuses a new "
                        "order id below one already used (103)",
                        rec.order_id,
                        self._highest_placed,
                    )
                self._highest_placed = max(self._highest_placed, rec.order_id)
            self._up.place(rec.order_id, self._spec(rec), fields)
            unsent.written.append(rec)
            if not unsent.modify:
                rec.sent = True

    def allocate_id(self) -> int:
        """The next order id, above every id the journal holds. A placeOrder with it must
        join :attr:`id_line` in the same step (the what-if service's do too)."""
        self._up.ensure_ids_above(self.store.max_id)
        order_id = self._up.next_order_id()
        if order_id <= self.store.max_id:
            raise RuntimeError(
                f"upstream gave order id {order_id}, not above the journal's {self.store.max_id}"
            )
        self.store.max_id = order_id
        return order_id

    def _new_records(
        self, caller: Caller, req: PlaceOrder, info: ContractInfo
    ) -> list[OrderRecord]:
        now = self.store.now()
        base = OrderRecord(
            order_id=self.allocate_id(),
            owner=caller.owner,
            client_order_id=req.client_order_id,
            lease=caller.lease,
            con_id=info.con_id,
            symbol=info.symbol,
            sec_type=info.sec_type,
            exchange=req.contract.exchange or info.exchange,
            currency=info.currency,
            action=req.action,
            quantity=req.quantity,
            order_type=req.order_type,
            limit_price=req.limit_price if uses(req.order_type, "limit_price") else None,
            stop_price=req.stop_price if uses(req.order_type, "stop_price") else None,
            tif=req.tif,
            outside_rth=req.outside_rth,
            account=req.account,
            parent_id=req.parent_order_id,
            remaining=req.quantity,
            fingerprint=fingerprint(req),
            created_ns=now,
            updated_ns=now,
            oca_group=req.oca_group,
            oca_type=req.oca_type,
            order_ref=req.order_ref,
            algo_strategy=req.algo_strategy,
            algo_params=encode_algo_params(req.algo_params),
            algo_id=req.algo_id,
            order_params=order_types.encode_params(order_types.params_of(req)),
        )
        recs = [base]
        exit_action = "SELL" if req.action == "BUY" else "BUY"
        sl_type = "STP" if req.stop_loss_limit is None else "STP LMT"
        legs = (("tp", "LMT", req.take_profit, None),
                ("sl", sl_type, req.stop_loss_limit, req.stop_loss))
        for suffix, order_type, limit, stop in legs:
            if limit is None and stop is None:
                continue
            recs.append(
                replace(
                    base,
                    order_id=self.allocate_id(),
                    client_order_id=f"{req.client_order_id}.{suffix}",
                    action=exit_action,
                    order_type=order_type,
                    limit_price=limit,
                    stop_price=stop,
                    parent_id=base.order_id,
                    fingerprint="",
                    # the entry's OCA group and algo are the parent's; the label is the family's
                    oca_group="",
                    oca_type=0,
                    algo_strategy="",
                    algo_params="",
                    algo_id="",
                    order_params="",
                )
            )
        return recs

    @staticmethod
    def _spec(rec: OrderRecord) -> ContractSpec:
        return ContractSpec(
            symbol=rec.symbol,
            sec_type=rec.sec_type,
            exchange=rec.exchange,
            currency=rec.currency,
            con_id=rec.con_id,
        )

    def _fields(self, rec: OrderRecord, placing: bool = False) -> OrderFields:
        # A bracket goes out parent first with transmit off; the last child transmits all
        # (for a placement :meth:`_write` sets it by the legs it sends). Once an order is
        # working, a re-send is a modify and always transmits.
        pending = rec.status == "PendingSubmit"
        if placing:
            transmit = True
        elif rec.parent_id and rec.parent_id in self.store.children:
            transmit = not pending or rec.order_id == self.store.children[rec.parent_id][-1]
        else:
            transmit = not pending or not self.store.children.get(rec.order_id)
        return OrderFields(
            action=rec.action,
            quantity=rec.quantity,
            order_type=rec.order_type,
            limit_price=rec.limit_price,
            stop_price=rec.stop_price,
            tif=rec.tif,
            outside_rth=rec.outside_rth,
            account=rec.account,
            parent_id=rec.parent_id,
            transmit=transmit,
            order_ref=make_order_ref(rec.owner, rec.client_order_id or ""),
            oca_group=make_oca_group(rec.owner, rec.oca_group),
            oca_type=rec.oca_type,
            algo_strategy=rec.algo_strategy,
            algo_params=tuple(decode_algo_params(rec.algo_params).items()),
            algo_id=rec.algo_id,
            params=tuple(sorted(order_types.decode_params(rec.order_params).items())),
        )

    def _sent(self, unsent: _Unsent, fut: asyncio.Future[None]) -> None:
        """The pacer is done with ``unsent``: written, failed, withdrawn or stopped."""
        for rec in unsent.recs:
            if self._unsent.get(rec.order_id) is not unsent:
                self.queued.discard(rec.order_id)
        if fut.cancelled():
            return  # withdrawn (the canceller ended its orders) or hub stopping
        exc = fut.exception()
        for rec in unsent.written:
            if not unsent.modify:
                self.store.persist(op_update, (rec.order_id, "sent", {"sent": True}), rec, None)
        if exc is None or unsent.modify:
            return
        for rec in unsent.recs:
            if rec in unsent.written or rec.status != "PendingSubmit":
                continue
            rec.status = "Inactive"
            rec.message = (
                f"could not be sent to the Gateway: {exc}; it was not sent and will not be "
                "re-sent (place it again with a new client_order_id)"
            )
            rec.updated_ns = self.store.now()
            changes = snapshot(rec, ("status", "message", "updated_ns"))
            ev = self.store.event(rec, "rejected")
            self.store.persist(op_update, (rec.order_id, "send_failed", changes), rec, ev)

    # ------------------------------------------------------------------ withdrawing

    def _descendants(self, rec: OrderRecord) -> list[OrderRecord]:
        out: list[OrderRecord] = []
        for child_id in self.store.children.get(rec.order_id, ()):
            child = self.store.by_id.get(child_id)
            if child is not None:
                out.extend([child, *self._descendants(child)])
        return out

    def _take_out(self, rec: OrderRecord, unsent: _Unsent) -> None:
        """Remove ``rec`` from its unsent send; withdraw the send once it carries nothing."""
        del self._unsent[rec.order_id]
        self.queued.discard(rec.order_id)
        if rec in unsent.recs:
            unsent.recs.remove(rec)
            unsent.fields.pop(rec.order_id, None)
        if unsent.future is None:
            return  # not queued yet: _queue_send sends what is left, or nothing
        if unsent.recs:
            self._pacer.recost(unsent.future, len(unsent.recs))
        else:
            self._pacer.withdraw(unsent.future)

    def _withdraw_placement(self, rec: OrderRecord) -> bool:
        """If ``rec`` was never sent, take it (and its unsent children) out of the queue and
        end it Cancelled here: True. False if its placeOrder has been written upstream."""
        unsent = self._unsent.get(rec.order_id)
        if unsent is None or unsent.modify:
            return False
        for child in self._descendants(rec):
            self._withdraw_placement(child)
        if self._unsent.get(rec.order_id) is unsent:
            self._take_out(rec, unsent)
            log.info("order %d cancelled before it was sent upstream", rec.order_id)
            self.store.modifying.pop(rec.order_id, None)
            self.updates.apply_status(rec, "Cancelled", None, None, None, NOT_SENT)
        return True

    def _withdraw_modify(self, rec: OrderRecord) -> None:
        """A modification of ``rec`` still queued is moot once ``rec`` is being cancelled:
        withdraw it and restore the fields the Gateway has (a ``modify_rejected`` event)."""
        unsent = self._unsent.get(rec.order_id)
        if unsent is None or not unsent.modify:
            return
        self._take_out(rec, unsent)
        before = self.store.modifying.pop(rec.order_id, None)
        if before is None:
            return
        for name, value in before.items():
            setattr(rec, name, value)
        rec.message = MODIFY_WITHDRAWN
        rec.updated_ns = self.store.now()
        changes = snapshot(rec, [*before, "message", "updated_ns"])
        ev = self.store.event(rec, "modify_rejected")
        self.store.persist(op_update, (rec.order_id, "modify_withdrawn", changes), rec, ev)

    def _cancel_now(self, rec: OrderRecord) -> None:
        """Cancel ``rec``, decided synchronously: withdrawn here if it was never sent,
        else a cancelOrder queued after everything already queued about it."""
        if rec.status in TERMINAL:
            return
        for child in self._descendants(rec):
            self._withdraw_placement(child)  # IB would cancel them with their parent
        if self._withdraw_placement(rec):
            return
        self._withdraw_modify(rec)
        fut = self._pacer.submit(
            Priority.CANCEL,
            partial(self._up.cancel, rec.order_id),
            key=self._family(rec),
            label=f"cancelOrder {rec.order_id}",
        )
        fut.add_done_callback(_log_send_failure)

    def _needs_upstream(self, recs: list[OrderRecord]) -> bool:
        """Whether cancelling ``recs`` has to send anything (some were written upstream)."""
        for rec in recs:
            if rec.status in TERMINAL:
                continue
            unsent = self._unsent.get(rec.order_id)
            if unsent is None or unsent.modify:
                return True
        return False

    async def _journaled(self, recs: list[OrderRecord]) -> None:
        """Wait until the placements of ``recs`` that are still being journaled have
        committed, so their ``acknowledged`` event precedes whatever a cancel publishes."""
        while True:
            waits = {
                p
                for rec in recs
                for p in (self._pending.get(rec.order_id), self._pending.get(rec.parent_id))
                if p is not None and not p.done()
            }
            if not waits:
                return
            await asyncio.wait(waits)

    def _note(self, order_id: int, kind: str, data: dict[str, Any]) -> None:
        """An audit note in the journal's log, not awaited: a cancel must not wait for it."""

        def done(result: Any) -> None:
            if isinstance(result, BaseException):
                log.error("journal note %s for order %d failed: %s", kind, order_id, result)

        self.store.writer.write_then(op_note, (order_id, kind, data), done)

    def _mine(self, caller: Caller, order_id: int, coid: str) -> OrderRecord | Refusal:
        rec = (
            self.store.by_id.get(order_id)
            if order_id
            else self.store.by_key.get((caller.owner, coid))
        )
        what = f"order {order_id}" if order_id else f"client_order_id {coid!r}"
        if rec is None:
            return Refusal(RejectReason.UNKNOWN_ORDER, f"{what} is not known to the hub")
        if rec.owner != caller.owner and caller.role != Role.OPERATOR:
            return Refusal(RejectReason.NOT_OWNER, f"{what} belongs to another script")
        if rec.status in TERMINAL:
            return Refusal(RejectReason.ORDER_DONE, f"{what} is already {rec.status}")
        return rec

    async def modify(self, caller: Caller, req: ModifyOrder) -> OrderAccepted | OrderRejected:
        rec = self._mine(caller, req.order_id, req.client_order_id)
        if isinstance(rec, OrderRecord):
            await self._journaled([rec])  # "acknowledged" first
            rec = self._mine(caller, req.order_id, req.client_order_id)
        if isinstance(rec, Refusal):
            return self._reject(req.id, req.client_order_id, rec, req.order_id)
        if rec.owner == EXTERNAL:
            ext = Refusal(RejectReason.NOT_OWNER, "external orders cannot be modified here")
            return self._reject(req.id, req.client_order_id, ext, rec.order_id)
        # A modification of an order whose placeOrder is still queued rides on it; any
        # other needs room upstream like a new order (else ``busy``).
        slot: Reservation | None = None
        if rec.order_id not in self._unsent:
            room = self._room(caller, 1)
            if isinstance(room, Refusal):
                return self._reject(req.id, req.client_order_id, room, rec.order_id)
            slot = room
        current = OrderParams(
            rec.action,
            rec.quantity,
            rec.order_type,
            rec.limit_price,
            rec.stop_price,
            rec.tif,
            sec_type=rec.sec_type,
        )
        refusal = self.risk.check_modify(
            req,
            current,
            lease=caller.lease,
            role=caller.role,
            account=rec.account,
            last_price=self._resolver.last_price(rec.con_id),
        )
        new = current.modified(req)
        if refusal is None and new.quantity < rec.filled - EPS:
            refusal = Refusal(
                RejectReason.BAD_QUANTITY,
                f"quantity {new.quantity:g} is below the {rec.filled:g} already filled",
            )
        if refusal is None:
            refusal = self._journal_refusal()
        if refusal is None and not self._up.is_connected():
            refusal = Refusal(RejectReason.UPSTREAM_DOWN, "the hub is not connected to the Gateway")
        if refusal is not None:
            if slot is not None:
                slot.release()
            return self._reject(req.id, req.client_order_id, refusal, rec.order_id)
        before = snapshot(rec, MODIFY_FIELDS)
        rec.quantity, rec.limit_price, rec.stop_price, rec.tif = (
            new.quantity,
            new.limit_price,
            new.stop_price,
            new.tif,
        )
        if req.outside_rth is not None:
            rec.outside_rth = req.outside_rth
        rec.remaining = max(0.0, rec.quantity - rec.filled)
        rec.updated_ns = self.store.now()
        try:
            await self.store.writer.write(
                op_update, rec.order_id, "modify", snapshot(rec, MODIFY_FIELDS)
            )
        except JournalError as exc:
            if slot is not None:
                slot.release()
            for name, value in before.items():
                setattr(rec, name, value)
            refusal = Refusal(RejectReason.INTERNAL, f"the order journal failed: {exc}")
            return self._reject(req.id, req.client_order_id, refusal, rec.order_id)
        except BaseException:  # cancelled (hub stopping): the room must not stay held
            if slot is not None:
                slot.release()
            raise
        self.store.deliver(rec, self.store.event(rec, "modified"))
        if rec.status in TERMINAL:  # ended while the journal committed: nothing to send
            if slot is not None:
                slot.release()
            return self._accepted(req.id, rec, duplicate=False)
        unsent = self._unsent.get(rec.order_id)
        if unsent is not None:
            # Still queued: the one placeOrder goes up with the newest (committed) fields.
            # A queued modification keeps the Gateway's fields it saved in ``modifying``.
            unsent.fields[rec.order_id] = self._fields(rec, placing=not unsent.modify)
            if slot is not None:
                slot.release()
            return self._accepted(req.id, rec, duplicate=False)
        # Until IB acknowledges (openOrder), a refusal restores these (OrderUpdates).
        self.store.modifying[rec.order_id] = before
        send = _Unsent([rec], {rec.order_id: self._fields(rec)}, modify=True, reservation=slot)
        self._unsent[rec.order_id] = send
        self._in_flight(rec.order_id)
        self._queue_send(send)
        return self._accepted(req.id, rec, duplicate=False)

    async def cancel(self, caller: Caller, req: CancelOrder) -> CancelRequested | OrderRejected:
        rec = self._mine(caller, req.order_id, req.client_order_id)
        if isinstance(rec, OrderRecord):
            await self._journaled([rec])  # "acknowledged" first
            rec = self._mine(caller, req.order_id, req.client_order_id)
        refusal = rec if isinstance(rec, Refusal) else self.risk.check_cancel(caller.role)
        if (
            refusal is None
            and isinstance(rec, OrderRecord)
            and self._needs_upstream([rec])
            and not self._up.is_connected()
        ):
            refusal = Refusal(RejectReason.UPSTREAM_DOWN, "the hub is not connected to the Gateway")
        if refusal is not None:
            return self._reject(req.id, req.client_order_id, refusal, req.order_id)
        assert isinstance(rec, OrderRecord)
        self._note(rec.order_id, "cancel_request", {})
        self._cancel_now(rec)
        return CancelRequested(id=req.id, order_ids=[rec.order_id])

    async def cancel_all(
        self, caller: Caller, req: CancelAllOrders
    ) -> CancelRequested | OrderRejected:
        refusal = self.risk.check_cancel(caller.role)
        if refusal is not None:
            return self._reject(req.id, "", refusal)
        await self._journaled([r for r in self.store.working if r.owner == caller.owner])
        mine = sorted(
            (r for r in self.store.working if r.owner == caller.owner), key=lambda r: r.order_id
        )
        if self._needs_upstream(mine) and not self._up.is_connected():
            down = Refusal(RejectReason.UPSTREAM_DOWN, "the hub is not connected to the Gateway")
            return self._reject(req.id, "", down)
        for rec in mine:
            self._note(rec.order_id, "cancel_all_request", {})
        for rec in mine:
            self._cancel_now(rec)  # parents first (lower ids): their unsent legs go with them
        return CancelRequested(id=req.id, order_ids=[r.order_id for r in mine])

    async def global_cancel(
        self, caller: Caller, req: GlobalCancel
    ) -> CancelRequested | OrderRejected:
        # Not refused when the journal has failed: a failed disk is when an operator most
        # needs to take risk off, and the cancel needs nothing durable from the hub.
        refusal = self.risk.check_operator(caller.role, "a global cancel")
        if refusal is None and not self._up.is_connected():
            refusal = Refusal(RejectReason.UPSTREAM_DOWN, "the hub is not connected to the Gateway")
        if refusal is not None:
            return self._reject(req.id, "", refusal)
        await self._journaled(self.store.working)
        working = sorted(self.store.working, key=lambda r: r.order_id)
        self._note(0, "global_cancel", {"by": caller.owner})
        # Nothing the hub still holds survives: unsent placements end here, queued
        # modifications are withdrawn, then reqGlobalCancel goes after what was sent.
        for rec in working:
            if not self._withdraw_placement(rec):
                self._withdraw_modify(rec)
        fut = self._pacer.submit(Priority.CANCEL, self._up.global_cancel, label="reqGlobalCancel")
        fut.add_done_callback(_log_send_failure)
        return CancelRequested(id=req.id, order_ids=[r.order_id for r in working])

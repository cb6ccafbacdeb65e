"""The request registry: one table of request type -> handler and what it needs.

Every request type the hub serves is registered here once, by the module that serves it
(:mod:`ibhub.hub.lease_requests`, :mod:`ibhub.hub.market_requests`,
:mod:`ibhub.hub.name_requests`, :mod:`ibhub.hub.status`, and the order service's
``OrderService.register``), with what the server checks before the handler runs:

* ``slow``: the handler returns an awaitable (it waits on the Gateway, the journal or
  the pacer) and runs as a task; otherwise it is answered inline, in the drain.
* ``lease``: the request must name a live lease. The server has already mapped the
  request's secret token to the lease's public handle (:meth:`Registry.admit`: any
  request that carries a token is bound, whether its type needs one or not); a request
  that names none is refused ``unknown_lease``, and the lease's heartbeat is refreshed.
* ``eager`` (with ``slow``): the task's first step runs at once, inside the receive
  (:func:`ibhub.tasks.eager_task`): a handler that needs no wait replies at once.
* ``role``: the lease must hold this role (``"operator"``), else ``forbidden``, saying
  what needed it (``action``).

The handler is called as ``fn(req, ctx)`` with a :class:`Context` (the sending peer,
and the :class:`~ibhub.hub.leases.Lease` when ``lease`` is set), so it trusts its caller
and looks nothing up again. Order-level rules stay with the orders (scopes, global
cancel and the read-only gate answer ``OrderRejected``, as the TWS front door needs them
too); the registry checks what is the same for every request of a type.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec

from ibhub.hub.leases import Lease, LeaseTable, Peer
from ibhub.protocol import Error, ErrorCode, Reply, Request

#: fn(req, ctx) -> a Reply (inline) or an awaitable of one (``slow``)
Handler = Callable[[Any, "Context"], "Reply | Awaitable[Reply]"]

OPERATOR_HOW = ("hello with role='operator': the operator token on loopback, a "
                "curve_operator_keys key with CURVE; docs/security.md")


@dataclass(frozen=True, slots=True)
class Context:
    """Who sent the request: the connection (and CURVE key) and, for a route with
    ``lease``, the live lease it names."""

    peer: Peer
    lease: Lease | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """One registration: the handler and what the server checks before calling it."""

    fn: Handler
    slow: bool = False
    lease: bool = False
    role: str = ""
    action: str = ""  # what needs the role, for the refusal: "listing script names"
    # A slow handler's first step runs in the receive call (tasks.eager_task), not a
    # loop turn later: one that needs no wait replies at once (orders: the ack)
    eager: bool = False


def unknown_lease(rid: int, handle: str) -> Error:
    """A request that names no live lease (by handle: after binding, or none at all)."""
    return Error(id=rid, code=ErrorCode.UNKNOWN_LEASE,
                 message=f"lease {handle!r} is unknown (expired, said goodbye, or never "
                         "existed); say hello again")


UNBOUND_LEASE = ("the lease in this request is unknown on this connection (expired, said "
                 "goodbye, the hub restarted, or it was opened by another connection); say "
                 "hello again and use the token of its welcome")


class Registry:
    """Request type -> :class:`Route`; :meth:`admit` applies a route's checks.

    ``leases``: the lease table that binds tokens and answers ``lease`` routes (None:
    requests are passed on as they came, tokens unbound, as in tests of the server).
    """

    def __init__(self, leases: LeaseTable | None = None) -> None:
        self.leases = leases
        self.routes: dict[type, Route] = {}
        # Called (no arguments) right after each reply of a slow request is handed to its
        # transport, in the same step: the order service publishes the "acknowledged"
        # events its reply went ahead of (OrderStore.deliver_due), so the script gets
        # both in one wake-up and nothing runs between them.
        self.after_reply: list[Callable[[], None]] = []

    def add(self, req_type: type[Request], fn: Handler, *, slow: bool = False,
            lease: bool = False, role: str = "", action: str = "",
            eager: bool = False) -> None:
        """Serve ``req_type`` with ``fn``; a second registration of a type replaces it."""
        self.routes[req_type] = Route(fn, slow, lease, role, action, eager)

    def admit(self, req: Request, peer: Peer) -> tuple[Route, Request, Context] | Error:
        """The route for ``req``, the request with its lease token bound to the lease's
        handle, and the handler's context; or the Error to answer instead."""
        leases = self.leases
        token = getattr(req, "lease", "") if leases is not None else ""
        if token:
            # Every request naming a lease is bound before any handler, so handlers and
            # services only ever see handles. An unknown token and a token from another
            # connection get the same reply, which names nobody.
            bound = leases.resolve(token, peer)  # type: ignore[union-attr]
            if bound is None:
                return Error(id=req.id, code=ErrorCode.UNKNOWN_LEASE, message=UNBOUND_LEASE)
            req = msgspec.structs.replace(req, lease=bound.lease_id)
        route = self.routes.get(type(req))
        if route is None:
            tag = type(req).__struct_config__.tag
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message=f"request type {tag!r} is not served by this hub")
        if not route.lease:
            return route, req, Context(peer)
        handle: str = getattr(req, "lease", "")
        lease = leases.touch(handle) if leases is not None else None
        if lease is None:
            return unknown_lease(req.id, handle)
        if route.role and lease.role != route.role:
            return Error(id=req.id, code=ErrorCode.FORBIDDEN,
                         message=f"{route.action} needs the {route.role} role "
                                 f"({OPERATOR_HOW})")
        return route, req, Context(peer, lease)

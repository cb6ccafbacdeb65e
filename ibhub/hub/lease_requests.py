"""Requests about a script's presence: hello, heartbeat, goodbye, raw client ids.

A hello checks the protocol version, grants a role (:class:`~ibhub.hub.security.RolePolicy`),
proves the script's name (:class:`~ibhub.hub.names.NameBindings`) and opens a lease
(:class:`~ibhub.hub.leases.LeaseTable`); the hub's services hear of it (``on_hello``).
Heartbeat and goodbye name a lease (the registry checks it); a raw client id may be
leased with or without one.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from ibhub import __version__
from ibhub.hub.lane import LANE_ROUTE
from ibhub.hub.leases import Lease, NoFreeClientId
from ibhub.hub.name_requests import names_unavailable
from ibhub.hub.names import NameRefused, new_secret
from ibhub.hub.registry import Context, Registry, unknown_lease
from ibhub.hub.security import RoleRefused
from ibhub.protocol import (
    PROTOCOL_VERSION,
    ClientIdLeased,
    Error,
    ErrorCode,
    Goodbye,
    Heartbeat,
    Hello,
    LeaseClientId,
    Ok,
    ReleaseClientId,
    Reply,
    Welcome,
)

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer

log = logging.getLogger(__name__)


class LeaseRequests:
    """Serves hello, heartbeat, goodbye and the raw client-id requests for ``hub``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def register(self, registry: Registry) -> None:
        registry.add(Hello, self.hello)
        registry.add(Heartbeat, self.heartbeat, lease=True)
        registry.add(Goodbye, self.goodbye, lease=True)
        registry.add(LeaseClientId, self.lease_client_id)
        registry.add(ReleaseClientId, self.release_client_id)

    def hello(self, req: Hello, ctx: Context) -> Reply:
        hub, peer = self.hub, ctx.peer
        if peer.route.startswith(LANE_ROUTE):  # a lease is bound to where it said hello
            return Error(id=req.id, code=ErrorCode.BAD_REQUEST,
                         message="say hello over the ZeroMQ request socket; the lane "
                                 "serves the requests of the lease it is attached to")
        if req.protocol != PROTOCOL_VERSION:
            return Error(id=req.id, code=ErrorCode.UNSUPPORTED_VERSION,
                         message=f"client speaks protocol {req.protocol}, this hub speaks "
                                 f"{PROTOCOL_VERSION}; upgrade the older side")
        try:
            role = hub.roles.grant(req.role, peer, req.credential)
        except RoleRefused as exc:
            log.warning("hello from %r refused: %s", req.name, exc)
            return Error(id=req.id, code=ErrorCode.FORBIDDEN, message=str(exc))
        names = hub.names
        try:
            binding = names.check(req.name, req.name_secret, peer.key) if names else None
        except NameRefused as exc:
            log.warning("hello as %r refused%s: %s", req.name,
                        f" (key {peer.key})" if peer.key else "", exc)
            return Error(id=req.id, code=ErrorCode.NAME_TAKEN, message=str(exc))
        except sqlite3.Error as exc:
            return names_unavailable(names, req.id, exc)
        try:
            lease = hub.leases.open(req.name, role, peer)
        except NoFreeClientId as exc:
            return Error(id=req.id, code=ErrorCode.NO_FREE_CLIENT_ID, message=str(exc))
        made = ""  # a secret the hub made for a client that brought none
        if names is not None:
            try:
                if binding is None:
                    made = "" if req.name_secret else new_secret()
                    names.bind(req.name, req.name_secret or made, peer.key)
                else:
                    names.seen(binding)
            except NameRefused as exc:  # another hub process on this data dir bound it
                hub.leases.close(lease.lease_id)
                return Error(id=req.id, code=ErrorCode.NAME_TAKEN, message=str(exc))
            except sqlite3.Error as exc:
                hub.leases.close(lease.lease_id)
                return names_unavailable(names, req.id, exc)
        log.info("lease %s opened for %r (%s%s), client id %s",
                 lease.lease_id, lease.name, lease.role,
                 f", key {peer.key}" if peer.key else "", lease.client_id)
        hub.notify("on_hello", lease.lease_id, lease.name)
        return Welcome(id=req.id, lease=lease.lease_id, client_id=lease.client_id,
                       heartbeat_interval=hub.settings.heartbeat_interval,
                       hub_version=__version__, token=lease.token, role=lease.role,
                       name_secret=made,
                       nats_epoch=hub.nats.epoch if hub.nats is not None else "",
                       lane=hub.lane.address if hub.lane is not None else "",
                       tick_bundle=True,  # Fanout.flush publishes bundle.tick always
                       lane_ticks=hub.lane is not None and bool(hub.lane.address))

    def heartbeat(self, req: Heartbeat, ctx: Context) -> Reply:
        lease = ctx.lease  # the registry refreshed it
        if lease is not None:
            slow_subscriber_report(lease, req.gaps, req.lag_ms)
        return Ok(id=req.id)

    def goodbye(self, req: Goodbye, ctx: Context) -> Reply:
        hub = self.hub
        lease, raws = hub.leases.close(req.lease)
        if lease is None:
            return unknown_lease(req.id, req.lease)
        hub.release_subscriptions(lease.lease_id)
        hub.notify("on_lease_gone", lease.lease_id)
        log.info("lease %s (%r) said goodbye; released %d raw ids",
                 lease.lease_id, lease.name, len(raws))
        return Ok(id=req.id)

    def lease_client_id(self, req: LeaseClientId, ctx: Context) -> Reply:
        leases = self.hub.leases
        # the lease is optional here: when named, it is live and refreshed
        if req.lease and leases.touch(req.lease) is None:
            return unknown_lease(req.id, req.lease)
        if req.token:  # a renewal
            raw = leases.renew_raw(req.token, req.ttl)
            if raw is None:
                return Error(id=req.id, code=ErrorCode.UNKNOWN_LEASE,
                             message="no raw client id is leased under this token (released "
                                     "or expired); lease a new one")
            log.info("raw client id %s (%s) renewed", raw.client_id, raw.name)
        else:
            try:
                raw = leases.lease_raw(req.name, req.ttl, req.lease)
            except NoFreeClientId as exc:
                log.warning("raw client id for %r refused: %s", req.name, exc)
                return Error(id=req.id, code=ErrorCode.NO_FREE_CLIENT_ID, message=str(exc))
            log.info("raw client id %s leased to %r", raw.client_id, raw.name)
        return ClientIdLeased(id=req.id, client_id=raw.client_id,
                              expires_in=raw.expires_in(leases.now()), token=raw.token)

    def release_client_id(self, req: ReleaseClientId, ctx: Context) -> Reply:
        """Release with the raw id's own token, or any raw id with the operator token."""
        token = None if self.hub.roles.is_operator_token(req.credential) else req.token
        if token == "":
            return Error(id=req.id, code=ErrorCode.FORBIDDEN,
                         message=f"releasing client id {req.client_id} needs the token its "
                                 "client_id_leased reply gave (or the operator token)")
        if self.hub.leases.release_raw(req.client_id, token) is None:
            return Error(id=req.id, code=ErrorCode.UNKNOWN_LEASE,
                         message=f"client id {req.client_id} is not leased under this token")
        return Ok(id=req.id)


SLOW_LAG_MS = 1000.0  # a client this far behind the hub's timestamps counts as slow


def slow_subscriber_report(lease: Lease, gaps: int, lag_ms: float) -> None:
    """Keep what a client says about keeping up (its heartbeat) and say so in the log
    when it starts losing events or falls behind: the PUB socket drops silently at
    a slow subscriber's high-water mark, so only the subscriber can tell."""
    if gaps > lease.gaps:
        log.warning("subscriber %r (lease %s) lost events: %d new sequence gap(s), %d in "
                    "all; it does not keep up with what it subscribed",
                    lease.name, lease.lease_id, gaps - lease.gaps, gaps)
    if lag_ms >= SLOW_LAG_MS > lease.lag_ms:
        log.warning("subscriber %r (lease %s) is %.1f s behind the hub", lease.name,
                    lease.lease_id, lag_ms / 1000)
    lease.gaps = max(0, gaps)
    lease.lag_ms = max(0.0, lag_ms)

"""Operator requests about script names: list the bindings, forget one.

Both need the operator role (the registry checks it, :mod:`ibhub.hub.registry`); the
bindings themselves are :class:`~ibhub.hub.names.NameBindings` (docs/security.md,
"Script names").
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

from ibhub.hub.names import NAMES_FILE, NameBindings
from ibhub.hub.registry import Context, Registry
from ibhub.protocol import (
    Error,
    ErrorCode,
    ForgetName,
    ListNames,
    NameInfo,
    NamesReply,
    Ok,
    Reply,
)

if TYPE_CHECKING:
    from ibhub.hub.server import HubServer

log = logging.getLogger(__name__)


def names_unavailable(names: NameBindings | None, rid: int, exc: sqlite3.Error) -> Error:
    """The reply when the bindings' database fails (logged with its path)."""
    path = names.path if names is not None else NAMES_FILE
    log.error("script-name bindings (%s): %s", path, exc)
    return Error(id=rid, code=ErrorCode.INTERNAL,
                 message="the hub cannot check or record script names right now (see "
                         "its log); try again")


class NameRequests:
    """Serves ``list_names`` and ``forget_name`` for ``hub``."""

    def __init__(self, hub: HubServer) -> None:
        self.hub = hub

    def register(self, registry: Registry) -> None:
        registry.add(ListNames, self.list_names, lease=True, role="operator",
                     action="listing script names")
        registry.add(ForgetName, self.forget_name, lease=True, role="operator",
                     action="forgetting a script name")

    def list_names(self, req: ListNames, ctx: Context) -> Reply:
        """Every bound script name, with the leases live under it now."""
        live: dict[str, int] = {}
        for lease in self.hub.leases.leases():
            live[lease.name] = live.get(lease.name, 0) + 1
        names = self.hub.names
        bindings = names.all() if names is not None else []
        return NamesReply(id=req.id, names=[
            NameInfo(name=b.name, key=b.key, bound_at=b.bound_at, last_seen=b.last_seen,
                     live=live.get(b.name, 0))
            for b in bindings
        ])

    def forget_name(self, req: ForgetName, ctx: Context) -> Reply:
        """Drop a name's binding. Leases open under it stay (they proved the name when
        they said hello); the next hello with the name binds it anew."""
        names = self.hub.names
        if names is None or not names.forget(req.name):
            return Error(id=req.id, code=ErrorCode.UNKNOWN_NAME,
                         message=f"script name {req.name!r} is not bound")
        return Ok(id=req.id)

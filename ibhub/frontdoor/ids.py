"""Id spaces: what the front door remembers per downstream client id.

Every downstream connection has its own request-id and order-id space (TWS API
clients count both from ``nextValidId`` on one counter); the hub has one. Request
ids are remapped per connection by the module that serves the request (market
data keeps ``reqId -> line``, pass-through requests ``reqId -> upstream id``).
Order ids outlive a connection, as at a real Gateway: a script that reconnects
with the same client id sees its working orders under the ids it gave them, so
the order map lives here, keyed by client id, for the hub's life (after a hub
restart it is rebuilt from the journal's client order ids, see ``orders.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass(eq=False)
class ClientBook:
    """One downstream client id: its order ids <-> the hub's, and its next valid id."""

    client_id: int
    next_id: int = 1
    to_hub: dict[int, int] = field(default_factory=dict)
    to_down: dict[int, int] = field(default_factory=dict)
    # A placement still on its way through the hub's order path: a cancel or modify
    # for that id waits for it (the hub order id is known only once it is journaled).
    placing: dict[int, asyncio.Future[int | None]] = field(default_factory=dict)

    def saw_id(self, down_id: int) -> None:
        """The client used ``down_id``: the next valid id must be above it."""
        if down_id >= self.next_id:
            self.next_id = down_id + 1

    def bind(self, down_id: int, hub_id: int) -> None:
        self.to_hub[down_id] = hub_id
        self.to_down[hub_id] = down_id
        self.saw_id(down_id)

    async def hub_id(self, down_id: int) -> int | None:
        """The hub's order id for ``down_id`` (waits for a placement in flight)."""
        pending = self.placing.get(down_id)
        if pending is not None:
            return await asyncio.shield(pending)
        return self.to_hub.get(down_id)


class ClientBooks:
    """Every client id seen since the hub started, and the hub order id -> client route."""

    def __init__(self) -> None:
        self._books: dict[int, ClientBook] = {}
        self.owner_of: dict[int, tuple[int, int]] = {}  # hub order id -> (client id, down id)

    def get(self, client_id: int) -> ClientBook:
        book = self._books.get(client_id)
        if book is None:
            book = self._books[client_id] = ClientBook(client_id)
        return book

    def bind(self, book: ClientBook, down_id: int, hub_id: int) -> None:
        book.bind(down_id, hub_id)
        self.owner_of[hub_id] = (book.client_id, down_id)

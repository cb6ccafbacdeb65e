"""New order ids reach the Gateway in the order they were taken.

TWS refuses a placeOrder whose new order id is below one already used on the session
(error 103, "Duplicate order id"; tws-protocol.md, pitfall 14). The hub takes an order's
id when it accepts the order, journals it, and only then hands the placeOrder to the
pacer, which sends first in, first out. The journal does not answer inserts in the order
they were made: the first insert of a loop turn is committed at once and later ones at
the turn's group commit, so an order started a turn later, committed at once together
with the ones still waiting, resumes first. Handed to the pacer as they resume, a burst
from several scripts went up as ids 6, 55, 7, 8, ... and the Gateway refused 7 to 54.

So everything that writes a placeOrder with a new id (an order or a bracket, a what-if)
:meth:`~IdLine.join`\\ s the line in the same step as it takes its id, says when it may
go with :meth:`~IdLine.ready`, and the line calls the sends strictly in join order; one
that will never go :meth:`~IdLine.leave`\\ s. Modifications reuse an id already sent and
do not queue here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable


class Ticket:
    """A place in the line; ``send`` is set once it may go."""

    __slots__ = ("send",)

    def __init__(self) -> None:
        self.send: Callable[[], None] | None = None


class IdLine:
    def __init__(self) -> None:
        self._line: deque[Ticket] = deque()

    def __len__(self) -> int:
        """Tickets waiting: taken ids whose sends have not been called yet."""
        return len(self._line)

    def join(self) -> Ticket:
        """Take the next place: call it in the same step as taking the order id."""
        ticket = Ticket()
        self._line.append(ticket)
        return ticket

    def ready(self, ticket: Ticket, send: Callable[[], None]) -> None:
        """``send`` (it hands the placeOrder to the pacer) runs now if every earlier
        ticket has gone, else right after the last of them."""
        ticket.send = send
        self._go()

    def leave(self, ticket: Ticket) -> None:
        """The ticket will never go (its journal insert failed, its caller gave up): the
        ones behind it need not wait for it. No effect once it has gone."""
        if ticket in self._line:
            self._line.remove(ticket)
            self._go()

    def _go(self) -> None:
        line = self._line
        while line and (send := line[0].send) is not None:
            line.popleft().send = None  # a send often holds its ticket's owner: no cycle
            send()

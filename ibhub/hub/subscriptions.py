"""Ref-counted market-data subscriptions and the line budget.

However many leases watch an instrument, there is one :class:`Subscription` for
each ``(con_id, kind)`` and therefore one upstream request. The registry only does
the bookkeeping (who holds what, how many lines are used); the hub decides what
to do when a subscription is created or becomes empty (open / cancel upstream).

A subscription counts one market-data line from creation to removal, whether or
not its upstream request is currently live (during a reconnect it is still
owed a line, so the budget cannot be oversold while the Gateway is away).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ibhub.protocol import ContractInfo

#: "bars" are TRADES bars (MIDPOINT for forex, which has no trades); "bars.<WHAT>" are
#: bars of that whatToShow (the front door serves each script's own); depth
#: lines have a registry (and budget) of their own (hub/depth.py).
BAR_WHATS = ("TRADES", "MIDPOINT", "BID", "ASK")
TBT_TYPES = ("Last", "AllLast", "BidAsk", "MidPoint")  # tick-by-tick lines: "tbt.<type>"
#: historical bars kept up to date, "hist.<bar size>.<WHAT>" ("hist.1 min.TRADES"): the
#: updates (IB's keepUpToDate) of the current bar, shared (hub/hist_updates.py)
HIST_BAR_SIZES = ("1 secs", "5 secs", "10 secs", "15 secs", "30 secs", "1 min", "2 mins",
                  "3 mins", "5 mins", "10 mins", "15 mins", "20 mins", "30 mins", "1 hour",
                  "2 hours", "3 hours", "4 hours", "8 hours", "1 day", "1 week", "1 month")
KINDS = ("ticks", "bars", "depth", *(f"bars.{w}" for w in BAR_WHATS),
         *(f"tbt.{t}" for t in TBT_TYPES), "hist.<bar size>.<WHAT>")


def valid_kind(kind: str) -> bool:
    """One of :data:`KINDS` (``hist.<bar size>.<WHAT>`` with any of IB's bar sizes and
    TRADES, MIDPOINT, BID or ASK)."""
    if kind.startswith("hist."):
        size, _, what = kind[5:].rpartition(".")
        return size in HIST_BAR_SIZES and what in BAR_WHATS
    return kind in KINDS

#: A ticks line with a generic tick list (options and instrument data):
#: ``"ticks+233,236"``. What a line carries depends on its list, so scripts share such a
#: line only with scripts asking for the same list (the TWS front door's reqMktData).
GENERIC_KIND_PREFIX = "ticks+"


def generic_ticks_of(kind: str) -> str:
    """The generic tick list of a line kind ("" for a plain ticks or bars line)."""
    return kind[len(GENERIC_KIND_PREFIX):] if kind.startswith(GENERIC_KIND_PREFIX) else ""


def is_tick_kind(kind: str) -> bool:
    """A reqMktData line (plain or with generic ticks), not real-time bars."""
    return kind == "ticks" or kind.startswith(GENERIC_KIND_PREFIX)


class LineLimit(Exception):
    """The market-data line budget is used up."""


class NotSubscribed(Exception):
    """The lease does not hold a subscription on that topic."""


@dataclass(eq=False, slots=True)
class Subscription:
    """One upstream market-data line shared by every lease in ``leases``.

    ``stream`` is the fan-out object that turns upstream updates into events
    (it is the upstream's tick sink); ``req_id`` is the live upstream request id,
    set and cleared by the upstream session.
    """

    con_id: int
    kind: str
    topic: str
    contract: ContractInfo
    stream: Any
    leases: set[str] = field(default_factory=set)
    req_id: int | None = None

    @property
    def key(self) -> tuple[int, str]:
        return (self.con_id, self.kind)


class SubscriptionRegistry:
    def __init__(self, lines_max: int, *, budget: str = "market-data line",
                 setting: str = "lines_max") -> None:
        self.lines_max = lines_max
        self._budget = budget  # what the limit is called in its error (depth: hub/depth.py)
        self._setting = setting
        self._by_key: dict[tuple[int, str], Subscription] = {}
        self._by_topic: dict[str, Subscription] = {}

    @property
    def lines_used(self) -> int:
        return len(self._by_key)

    def get(self, con_id: int, kind: str) -> Subscription | None:
        return self._by_key.get((con_id, kind))

    def by_topic(self, topic: str) -> Subscription | None:
        return self._by_topic.get(topic)

    def all(self) -> list[Subscription]:
        return list(self._by_key.values())

    def check_line_available(self, con_id: int, kind: str) -> None:
        """Raise :class:`LineLimit` if a new ``(con_id, kind)`` would exceed the budget."""
        if (con_id, kind) not in self._by_key and len(self._by_key) >= self.lines_max:
            raise LineLimit(
                f"{self._budget} limit reached: {len(self._by_key)} of {self.lines_max} lines "
                f"in use; unsubscribe something or raise {self._setting}"
            )

    def add(
        self, lease_id: str, contract: ContractInfo, kind: str, topic: str, stream: Any
    ) -> tuple[Subscription, bool]:
        """Add ``lease_id`` to the subscription for ``contract``; create it if needed.

        Returns (subscription, created). ``topic`` and ``stream`` are used only when
        the subscription is created. Raises :class:`LineLimit` when a new line is
        needed and none is free.
        """
        if not valid_kind(kind) and not generic_ticks_of(kind):
            raise ValueError(f"unknown subscription kind {kind!r}; expected one of {KINDS}")
        key = (contract.con_id, kind)
        sub = self._by_key.get(key)
        created = False
        if sub is None:
            self.check_line_available(contract.con_id, kind)
            sub = Subscription(contract.con_id, kind, topic, contract, stream)
            self._by_key[key] = sub
            self._by_topic[topic] = sub
            created = True
        sub.leases.add(lease_id)
        return sub, created

    def remove(self, lease_id: str, topic: str) -> tuple[Subscription, bool]:
        """Drop ``lease_id`` from the subscription on ``topic``.

        Returns (subscription, now_empty); an empty subscription is removed from the
        registry and its line freed. Raises :class:`NotSubscribed`.
        """
        sub = self._by_topic.get(topic)
        if sub is None or lease_id not in sub.leases:
            raise NotSubscribed(f"lease {lease_id} is not subscribed to {topic!r}")
        sub.leases.discard(lease_id)
        if sub.leases:
            return sub, False
        self._forget(sub)
        return sub, True

    def release_lease(self, lease_id: str) -> list[Subscription]:
        """Drop ``lease_id`` everywhere; returns the subscriptions that became empty."""
        emptied = []
        for sub in list(self._by_key.values()):
            if lease_id in sub.leases:
                sub.leases.discard(lease_id)
                if not sub.leases:
                    self._forget(sub)
                    emptied.append(sub)
        return emptied

    def _forget(self, sub: Subscription) -> None:
        self._by_key.pop(sub.key, None)
        self._by_topic.pop(sub.topic, None)

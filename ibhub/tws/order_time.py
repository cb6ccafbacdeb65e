"""IB's order time fields (``goodTillDate``, ``goodAfterTime``): parse and check the text.

IB accepts ``"YYYYMMDD HH:MM:SS"`` optionally followed by a time-zone name
(``"20261231 16:00:00 US/Eastern"``), and ``"YYYYMMDD-HH:MM:SS"`` which is UTC. A time
without a zone is in the Gateway's time zone: for the simulator (whose handshake says
"Greenwich Mean Time") that is UTC. The hub passes the text to the Gateway unchanged, so
the Gateway's own reading wins; the hub parses it only to refuse what IB would refuse
(malformed text, an unknown zone, a time already past).
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FORMATS = ("%Y%m%d %H:%M:%S", "%Y%m%d-%H:%M:%S")
#: zone names TWS writes that the tz database spells differently
_ALIASES = {"Greenwich Mean Time": "UTC", "GMT": "UTC", "EST": "US/Eastern",
            "EDT": "US/Eastern", "CST": "US/Central", "CDT": "US/Central"}  # fmt: skip


class OrderTimeError(ValueError):
    """An order time IB would not accept; the message names the problem."""


def parse_order_time(text: str, default_zone: dt.tzinfo = dt.UTC) -> dt.datetime:
    """The aware datetime ``text`` names; raises :class:`OrderTimeError`."""
    value = text.strip()
    if len(value) < 17:
        raise OrderTimeError(
            f"{text!r} is not an IB order time: use 'YYYYMMDD HH:MM:SS [zone]' "
            "or 'YYYYMMDD-HH:MM:SS' (UTC)"
        )
    stamp, zone_name = value[:17], value[17:].strip()
    for fmt in _FORMATS:
        try:
            naive = dt.datetime.strptime(stamp, fmt)
        except ValueError:
            continue
        if fmt.endswith("-%H:%M:%S") and not zone_name:
            return naive.replace(tzinfo=dt.UTC)
        if not zone_name:
            return naive.replace(tzinfo=default_zone)
        try:
            zone = ZoneInfo(_ALIASES.get(zone_name, zone_name))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise OrderTimeError(f"unknown time zone {zone_name!r} in {text!r}") from exc
        return naive.replace(tzinfo=zone)
    raise OrderTimeError(
        f"{text!r} is not an IB order time: use 'YYYYMMDD HH:MM:SS [zone]' "
        "or 'YYYYMMDD-HH:MM:SS' (UTC)"
    )

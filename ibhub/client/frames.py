"""``to_dataframe``: ticks and bars as a pandas DataFrame (``ib_insync.util.df`` for ibhub).

pandas is optional (``pip install 'ibhub[pandas]'``); it is imported only when
``to_dataframe`` is called, so the SDK itself never needs it.

One row per event, one column per field, in the struct's field order. ``Ticks``
batches are expanded into their ticks. Columns with a time get a companion
``datetime`` column (timezone-aware UTC): ``time`` (epoch seconds: bars,
historical bars) or, for events without one, ``ts`` (the hub's publish time in ns).
Rows of different types (ticks and bars mixed) share the columns they have in
common plus the rest filled with NaN, as pandas does for records.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from msgspec import Struct, structs

from ibhub.protocol import Ticks

if TYPE_CHECKING:
    import pandas

__all__ = ["to_dataframe"]


def to_dataframe(events: Iterable[Struct]) -> pandas.DataFrame:
    """Ticks, bars (``Bar``, historical ``BarData``) or any protocol structs as a
    DataFrame; raises ``ImportError`` naming the extra if pandas is not installed."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - the message is the point
        raise ImportError("to_dataframe needs pandas: pip install 'ibhub[pandas]'") from exc
    rows: list[dict[str, Any]] = []
    columns: list[str] = []
    for event in events:
        items = event.ticks if isinstance(event, Ticks) else (event,)
        for item in items:
            row = structs.asdict(item)
            for name in row:
                if name not in columns:
                    columns.append(name)
            rows.append(row)
    frame = pd.DataFrame.from_records(rows, columns=columns)
    if "time" in frame.columns:
        frame["datetime"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    elif "ts" in frame.columns:
        frame["datetime"] = pd.to_datetime(frame["ts"], unit="ns", utc=True)
    return frame

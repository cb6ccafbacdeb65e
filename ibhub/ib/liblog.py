"""The IB client library's own log lines, demoted where the hub says the same once.

During a Gateway outage ib_insync / ib_async log two ERROR lines per connect attempt
(``API connection failed: ConnectionRefusedError(...)`` and ``Make sure API port on
TWS/IBG is open``), one per dropped socket (``Peer closed connection.``) and one per IB
error message (``Error 1100, reqId -1: ...``). The hub reports every one of these
itself, in its own words and at a level that fits: the session logs the first failed
attempt of an outage as a WARNING and the retries at INFO, the alerts service one
``upstream_lost`` / ``upstream_restored`` WARNING each, and every IB error code is
logged by :meth:`ibhub.ib.session.Upstream._on_error` (INFO for IB's warnings, WARNING
otherwise). Left alone, the library's lines made a nightly Gateway restart look like
dozens of ERRORs to log-based alerting.

:func:`demote_library_logs` puts a filter on the library's ``client`` and ``wrapper``
loggers that re-logs those lines at DEBUG under ``ibhub.ib.liblog`` (``--log-level
DEBUG`` still shows them, with the library's logger name). Anything else the library
logs (an order it cancelled, an unknown reqId) passes through untouched.
"""

from __future__ import annotations

import logging

from ibhub.ib import lib as iblib

log = logging.getLogger(__name__)

# Messages the hub reports itself (see the module docstring), by their start.
CLIENT_PREFIXES = ("API connection failed", "Make sure API port", "Peer closed connection",
                   "Error", "Socket error")
WRAPPER_PREFIXES = ("Error ", "Warning ")


class DemoteFilter(logging.Filter):
    """Drops a library record at WARNING or above whose text starts with one of
    ``prefixes`` and logs it again at DEBUG on this module's logger."""

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.demoted = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = record.getMessage()
        if not text.startswith(self.prefixes):
            return True
        self.demoted += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s %s (demoted): %s", record.name, record.levelname, text)
        return False


def demote_library_logs(library: str | None = None) -> dict[str, DemoteFilter]:
    """Install the filters on ``library``'s loggers (default: the library in use).

    Idempotent: a logger that already has one keeps it. Returns the filters by logger.
    """
    name = library or iblib.NAME
    installed: dict[str, DemoteFilter] = {}
    for suffix, prefixes in (("client", CLIENT_PREFIXES), ("wrapper", WRAPPER_PREFIXES)):
        logger = logging.getLogger(f"{name}.{suffix}")
        existing = [f for f in logger.filters if isinstance(f, DemoteFilter)]
        if existing:
            installed[logger.name] = existing[0]
            continue
        flt = DemoteFilter(prefixes)
        logger.addFilter(flt)
        installed[logger.name] = flt
    return installed

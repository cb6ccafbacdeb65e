"""The one door to the IB client library: ``ib_insync`` or ``ib_async``.

Every other module of the hub imports the client library's names from here, so this is
the only module that knows which library is in use.

Which library
    ``ib_insync`` 0.9.86 (the design's choice; archived, no release since 2024) on
    Python 3.11, ``ib_async`` >= 2.1 (its maintained continuation, same API) on Python
    3.12 and newer. The install picks the same by environment marker (pyproject.toml):
    ib_insync's ``eventkit`` raises ``DeprecationWarning`` on 3.12+ (no current event
    loop) and ib_insync does not import at all on 3.14. If the preferred library is
    not installed but the other one is, the other one is used. ``IBHUB_IB_LIBRARY``
    (``ib_insync`` or ``ib_async``) forces one, for comparing the two on one
    interpreter; a forced library that is missing is an error, never a silent fallback.

The hub's contract with the library
    The hub is written against ib_insync 0.9.86's behaviour. Where ib_async behaves
    differently in a way a hub client could see, :func:`new_ib` puts ib_insync's
    behaviour back (see ``_ib_insync_request_errors``), so the hub answers the same
    with either library.

Private internals
    The fast socket reader (:mod:`ibhub.ib.reader`), the order-cache pruning
    (:mod:`ibhub.ib.trade_cache`) and the request shims (here, and the NUL guard on
    ``Client.send``) reach into the library's private state. What each one needs is
    listed here (:data:`FAST_READER`, :data:`ORDER_CACHES`, :data:`REQUESTS`) and checked
    when the hub starts (:func:`check_internals`, from :func:`new_ib`): a library version
    that moved any of it stops the hub with :class:`LibraryMismatch` naming what moved
    (``ibhub run`` exits with that message), instead of a hub that runs and then
    misreads the socket.
"""

from __future__ import annotations

import importlib
import inspect
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from importlib import metadata
from types import ModuleType
from typing import TYPE_CHECKING, Any, Final

from ibhub.tws.ib_codes import is_warning

log = logging.getLogger(__name__)

#: The libraries the hub runs on, and the versions it is tested with.
SUPPORTED: Final = ("ib_insync", "ib_async")
TESTED: Final = {"ib_insync": "0.9.86", "ib_async": "2.1"}
#: Environment variable that forces one library.
ENV_VAR: Final = "IBHUB_IB_LIBRARY"


def preferred(version: tuple[int, ...] = tuple(sys.version_info[:2])) -> tuple[str, str]:
    """The libraries to try on this Python, preferred first (the pyproject markers' rule)."""
    return ("ib_insync", "ib_async") if version < (3, 12) else ("ib_async", "ib_insync")


def _load() -> ModuleType:
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced and forced not in SUPPORTED:
        raise ImportError(f"{ENV_VAR}={forced!r}: expected one of {', '.join(SUPPORTED)}")
    names = (forced,) if forced else preferred()
    for name in names:
        try:
            return importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise  # the library is there but one of its own imports is missing
    how = f"{ENV_VAR}={forced}" if forced else f"Python {sys.version_info[0]}.{sys.version_info[1]}"
    raise ImportError(
        f"no IB client library for {how}: install {names[0]} "
        f"(pip install {names[0].replace('_', '-')}; `pip install ibhub` picks it by Python "
        "version)"
    )


module: Final[ModuleType] = _load()
#: ``"ib_insync"`` or ``"ib_async"``.
NAME: Final[str] = module.__name__
VERSION: Final[str] = metadata.version(NAME)


def submodule(name: str) -> ModuleType:
    """The library's submodule ``name`` (``"decoder"``, ``"client"``, ...)."""
    return importlib.import_module(f"{NAME}.{name}")


if TYPE_CHECKING:
    from ib_insync import IB, Contract, Order, TagValue
    from ib_insync.wrapper import RequestError
else:
    IB = module.IB
    Contract = module.Contract
    Order = module.Order
    TagValue = module.TagValue
    RequestError = submodule("wrapper").RequestError


def describe() -> str:
    """``"ib_async 2.1.0"``: the library in use and its version (for logs and status)."""
    return f"{NAME} {VERSION}"


def new_ib() -> IB:
    """A fresh ``IB`` that behaves as ib_insync 0.9.86 wherever the hub's clients could tell.

    Checks the private internals first (:func:`check_internals`).
    """
    ib = IB()
    check_internals(ib)
    log.info("IB client library %s", describe())
    if NAME != "ib_insync":
        _ib_insync_request_errors(ib)
    return ib


def _ib_insync_request_errors(ib: IB) -> None:
    """Where ib_async's error handling differs from ib_insync's in a way the hub's clients
    could see, do as ib_insync does.

    * ib_async treats 105, 321 and 329 as warnings: a request IB refused with 321
      ("error validating request": a bad bar size, duration or contract field) is left
      waiting, and the hub's client would get a time-out after ``request_timeout``
      instead of IB's refusal at once. ib_insync fails the request with the code, so we
      do the same: after ib_async's own handling, a request still pending after an
      error that is no warning by the hub's rule (:func:`ibhub.tws.ib_codes.is_warning`,
      ib_insync's) ends with a :class:`RequestError` (or empty, when
      ``RaiseRequestErrors`` is off, as ib_insync does).
    * For such a warning about an order, ib_async sets the trade's status to
      ``ValidationError``, a status IB never sends. The trade keeps the status IB last
      reported instead (the hub reads it again on the next openOrder), so the status
      never reaches the hub's order book; the error itself reaches the book through
      ``errorEvent`` as with ib_insync, and the book judges it by code
      (:mod:`ibhub.ib.orders`).
    """
    wrapper = ib.wrapper
    original = wrapper.error

    def error(reqId: int, errorCode: int, errorString: str, *args: Any) -> None:
        trade = wrapper.trades.get((wrapper.clientId, reqId)) if reqId > 0 else None
        status = trade.orderStatus.status if trade is not None else ""
        original(reqId, errorCode, errorString, *args)
        if trade is not None and trade.orderStatus.status == _VALIDATION_ERROR != status:
            trade.orderStatus.status = status
        if reqId in wrapper._futures and not is_warning(errorCode):
            if ib.RaiseRequestErrors:
                wrapper._endReq(reqId, RequestError(reqId, errorCode, errorString), success=False)
            else:
                wrapper._endReq(reqId)

    wrapper.error = error


_VALIDATION_ERROR: Final = "ValidationError"  # ib_async's own order status


# ---------------------------------------------------------------------------- internals


class LibraryMismatch(RuntimeError):
    """The installed IB client library lacks a private internal the hub relies on."""


def _is_event(value: Any) -> bool:
    return callable(getattr(value, "emit", None)) and hasattr(value, "__iadd__")


def _params(*names: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        try:
            got = list(inspect.signature(value).parameters)
        except (TypeError, ValueError):
            return False
        return got[: len(names)] == list(names)

    check.__doc__ = f"a method taking ({', '.join(names)})"
    return check


def _has_keys(*keys: int) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, dict) and all(k in value for k in keys)

    check.__doc__ = f"a dict with entries {', '.join(map(str, keys))}"
    return check


def _kind(kind: type | tuple[type, ...], doc: str) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        return isinstance(value, kind)

    check.__doc__ = doc
    return check


def _callable(value: Any) -> bool:
    """callable"""
    return callable(value)


def _present(value: Any) -> bool:
    """there (None until connected)"""
    return True


def _event(value: Any) -> bool:
    """an event (``+=`` / ``-=`` / ``emit``)"""
    return _is_event(value)


_INT = _kind(int, "an int")
_DICT = _kind(dict, "a dict")

#: What :meth:`ibhub.ib.reader.TickReader.on_socket_data` reads and writes on ``ib``.
FAST_READER: Final[Mapping[str, Callable[[Any], bool]]] = {
    "client._onSocketHasData": _params("data"),
    "client._apiReady": _kind(bool, "a bool"),
    "client._data": _kind(bytes, "bytes"),
    "client._numBytesRecv": _INT,
    "client._numMsgRecv": _INT,
    "client._tcpDataArrived": _callable,
    "client._tcpDataProcessed": _callable,
    "client.conn.hasData": _event,
    "client.conn.transport": _present,
    "client.decoder.handlers": _has_keys(1, 2, 50),
    "client.decoder.interpret": _params("fields"),
}

_ORDER_STATUS: Final = (
    "orderId",
    "status",
    "filled",
    "remaining",
    "avgFillPrice",
    "permId",
    "parentId",
    "lastFillPrice",
    "clientId",
    "whyHeld",
    "mktCapPrice",
)

#: What :class:`ibhub.ib.trade_cache.TradeCache` prunes and wraps on ``ib``.
ORDER_CACHES: Final[Mapping[str, Callable[[Any], bool]]] = {
    "wrapper.trades": _DICT,
    "wrapper.permId2Trade": _DICT,
    "wrapper.fills": _DICT,
    "wrapper._futures": _DICT,
    "wrapper.orderKey": _params("clientId", "orderId", "permId"),
    "wrapper.execDetails": _params("reqId", "contract", "execution"),
    "wrapper.commissionReport": _params("commissionReport"),
    "wrapper.orderStatus": _params(*_ORDER_STATUS),
    # eventkit's Event keeps the arguments it last emitted here (a pruned trade's events
    # are cleared so that the trade is not a reference cycle: trade_cache._release)
    "orderStatusEvent._value": _kind(object, "an attribute"),
}

#: What :func:`new_ib` and the request path use (``client.send``: wrapped by
#: :func:`ibhub.ib.session.guard_fields`).
REQUESTS: Final[Mapping[str, Callable[[Any], bool]]] = {
    "client.send": _params("fields"),
    "wrapper.error": _params("reqId", "errorCode", "errorString"),
    "wrapper._endReq": _params("key", "result", "success"),
    "wrapper.clientId": _INT,
    "RaiseRequestErrors": _kind(bool, "a bool"),
}

#: Everything above: what the hub checks when it starts.
ALL_INTERNALS: Final = (FAST_READER, ORDER_CACHES, REQUESTS)


def missing_internals(
    ib: Any, needs: Iterable[Mapping[str, Callable[[Any], bool]]] = ()
) -> list[str]:
    """The internals of ``ib`` (of ``needs``, default all) that are gone or changed, described."""
    problems = []
    for table in needs or ALL_INTERNALS:
        for path, check in table.items():
            value: Any = ib
            try:
                for part in path.split("."):
                    value = getattr(value, part)
            except AttributeError:
                problems.append(f"ib.{path} is gone")
                continue
            if not check(value):
                problems.append(f"ib.{path} is no longer {check.__doc__}")
    return problems


def check_internals(ib: Any, needs: Iterable[Mapping[str, Callable[[Any], bool]]] = ()) -> None:
    """Raise :class:`LibraryMismatch` naming every private internal that moved."""
    problems = missing_internals(ib, needs)
    if problems:
        raise LibraryMismatch(
            f"{describe()} is not a version ibhub can run on: {'; '.join(problems)}. "
            f"ibhub is tested with ib_insync {TESTED['ib_insync']} and ib_async "
            f"{TESTED['ib_async']}; install one of those (see README, 'Python versions')."
        )

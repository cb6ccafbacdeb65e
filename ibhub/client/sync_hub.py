"""``Hub``: a thread-safe blocking facade over ``AsyncHub``.

The asyncio core runs on its own event loop in one background daemon thread; every
blocking method submits a coroutine there with ``run_coroutine_threadsafe`` and
waits for its result, so any number of script threads may call one ``Hub``. No
``nest_asyncio``: the script's own thread never runs the loop, and an asyncio
program should use ``AsyncHub`` directly.

Most methods are generated from ``AsyncHub``'s (as ``jupyter_client.blocking`` does):
``_blocking`` turns a coroutine method into one that runs it on the SDK thread and
waits, ``_direct`` forwards a plain method, ``_Mirror`` a read-only property; each
keeps the original's name, docstring, signature and type hints (``help(Hub)``,
``inspect.signature`` and mypy see ``AsyncHub``'s parameters). Written by hand are
only the members that differ: the lifecycle (the SDK thread), ``subscribe`` (a queue
that crosses threads), ``stats`` and ``is_connected`` (see each).
tests/unit/test_client_blocking.py checks that every public member of ``AsyncHub``
has its blocking counterpart.

Callbacks (subscription callbacks, connect/disconnect handlers) run on the SDK's
thread and must not block it; the blocking iterator is the way to consume ticks
in the script's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, Concatenate, Generic, Literal, ParamSpec, TypeVar, overload

from ibhub.client.async_hub import AsyncHub, ContractArg, OnEvent, TbtKind
from ibhub.client.batch import Batch
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.orders import Order
from ibhub.client.subscription import E, Subscription
from ibhub.protocol import (
    Bar,
    ContractInfo,
    ContractSpec,
    DepthBook,
    ErrorEvent,
    Event,
    Tick,
    TickByTick,
)

T = TypeVar("T")
P = ParamSpec("P")
_CLOSED: Any = object()


def _blocking(
    method: Callable[Concatenate[AsyncHub, P], Coroutine[Any, Any, T]],
) -> Callable[Concatenate[Hub, P], T]:
    """The blocking form of a coroutine method of ``AsyncHub``: the coroutine runs on
    the SDK thread's loop and the caller's thread waits for its result (or exception)."""
    if not inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__} is not a coroutine method; use _direct")

    @functools.wraps(method)
    def call(self: Hub, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._call(method(self.async_hub, *args, **kwargs))

    return _as_hub_member(call)


def _direct(method: Callable[Concatenate[AsyncHub, P], T]) -> Callable[Concatenate[Hub, P], T]:
    """A plain (non-coroutine) method of ``AsyncHub``, called on the caller's thread as
    before the facade was generated: it only appends a handler or copies a list."""
    if inspect.iscoroutinefunction(method):
        raise TypeError(f"{method.__qualname__} is a coroutine method; use _blocking")

    @functools.wraps(method)
    def call(self: Hub, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return method(self.async_hub, *args, **kwargs)

    return _as_hub_member(call)


def _as_hub_member(call: Callable[Concatenate[Hub, P], T]) -> Callable[Concatenate[Hub, P], T]:
    """Name the wrapper as ``Hub``'s (tracebacks, ``help``); ``__wrapped__`` still
    points at ``AsyncHub``'s method, whose signature ``inspect.signature`` shows."""
    call.__module__ = __name__
    call.__qualname__ = f"Hub.{call.__name__}"
    return call


class _Mirror(Generic[T]):
    """A read-only property of ``AsyncHub``, read on the caller's thread (a plain
    attribute read), or ``default`` while the ``Hub`` is not connected."""

    def __init__(self, prop: Callable[[AsyncHub], T], default: T) -> None:
        # ``AsyncHub.lease`` is a ``property`` at run time; mypy types it as its getter.
        fget = prop.fget if isinstance(prop, property) else prop
        if fget is None:
            raise TypeError("_Mirror needs a property with a getter")
        self._fget: Callable[[AsyncHub], T] = fget
        self._default = default
        self.__doc__ = prop.__doc__
        self.__wrapped__ = prop

    @overload
    def __get__(self, obj: None, owner: type[Hub]) -> _Mirror[T]: ...

    @overload
    def __get__(self, obj: Hub, owner: type[Hub]) -> T: ...

    def __get__(self, obj: Hub | None, owner: type[Hub]) -> T | _Mirror[T]:
        if obj is None:
            return self
        hub = obj._async
        return self._default if hub is None else self._fget(hub)

    def __set__(self, obj: Hub, value: object) -> None:
        """Read-only, like the property it mirrors (and ``help`` lists it as one)."""
        raise AttributeError(f"Hub.{self._fget.__name__} is read-only")


class BlockingSubscription(Generic[E]):
    """A subscription read from a plain thread: ``for tick in sub:`` or ``sub.get()``.

    Generic in what it yields, like :class:`~ibhub.client.subscription.Subscription`."""

    def __init__(self, hub: Hub, maxsize: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[E] = queue.Queue(maxsize=max(1, maxsize))
        self._inner: Subscription[E] | None = None
        self.dropped = 0

    def _push(self, event: E) -> None:
        """Runs on the SDK thread (the only producer): drop the oldest when full."""
        while True:
            try:
                self._queue.put_nowait(event)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    self._queue.get_nowait()
                    self.dropped += 1

    @property
    def inner(self) -> Subscription[E]:
        assert self._inner is not None
        return self._inner

    @property
    def topic(self) -> str:
        return self.inner.topic

    @property
    def contract(self) -> ContractInfo:
        return self.inner.contract

    @property
    def gaps(self) -> int:
        return self.inner.gaps

    @property
    def received(self) -> int:
        return self.inner.received

    @property
    def latest(self) -> E | None:
        return self.inner.latest

    @property
    def closed(self) -> bool:
        return self.inner.closed

    @property
    def error(self) -> HubError | None:
        """Why the SDK ended this subscription (the hub refused to resubscribe it)."""
        return self.inner.error

    @property
    def last_error(self) -> ErrorEvent | None:
        return self.inner.last_error

    def get(self, timeout: float | None = None) -> E:
        """The next event (a ``Batch`` for ``subscribe_batches``); ``HubTimeout`` after
        ``timeout`` s, ``StopIteration`` once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise HubTimeout(f"no event on {self.topic} within {timeout}s") from None
        if item is _CLOSED:
            self._push(_CLOSED)  # wake other readers
            raise StopIteration
        return item

    def __iter__(self) -> Iterator[E]:
        while True:
            try:
                yield self.get()
            except StopIteration:
                return

    def _ended(self) -> None:
        """The subscription ended (closed, or refused by the hub): drop the queue and
        wake the readers. Runs on the SDK thread."""
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._push(_CLOSED)

    def close(self) -> None:
        """Unsubscribe and end iteration."""
        inner = self._inner
        if inner is not None and not inner.closed and self._hub._async is not None:
            self._hub._call(self._hub.async_hub.unsubscribe(inner))
        else:
            self._push(_CLOSED)

    def __enter__(self) -> BlockingSubscription:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Hub:
    """Blocking SDK client: ``with Hub() as hub: ...``. Same arguments as ``AsyncHub``."""

    def __init__(self, pub: str | None = None, rpc: str | None = None, **options: Any) -> None:
        self._pub = pub
        self._rpc = rpc
        self._options = options
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._async: AsyncHub | None = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Hub:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def connect(self) -> None:
        """Start the SDK thread, say hello and get a lease (blocks; retries per options)."""
        with self._lock:
            if self._async is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()
            thread = threading.Thread(
                target=self._run_loop, args=(loop, ready), name="ibhub-sdk", daemon=True
            )
            thread.start()
            ready.wait()
            self._loop, self._thread = loop, thread
            try:
                self._async = self._submit(self._create_and_connect())
            except BaseException:
                self._stop_loop()
                raise

    async def _create_and_connect(self) -> AsyncHub:
        hub = AsyncHub(self._pub, self._rpc, **self._options)
        await hub.connect()
        return hub

    def close(self) -> None:
        """Say goodbye, close the sockets and stop the SDK thread. Idempotent."""
        if self._thread is not None and threading.current_thread() is self._thread:
            raise RuntimeError("Hub.close() was called from an SDK callback; call it from "
                               "the script's own thread")
        with self._lock:
            hub, self._async = self._async, None
            if hub is not None:
                self._submit(hub.close())
            self._stop_loop()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        try:
            loop.run_forever()
        finally:
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()

    def _submit(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise NotConnected()
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a blocking Hub method was called from an SDK callback; use hub.async_hub "
                "and schedule the coroutine instead (the SDK thread must not block)"
            )
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._async is None:
            coro.close()
            raise NotConnected()
        return self._submit(coro)

    @property
    def async_hub(self) -> AsyncHub:
        """The underlying ``AsyncHub`` (lives on the SDK thread's loop)."""
        if self._async is None:
            raise NotConnected()
        return self._async

    # ------------------------------------------------------------------ state

    lease = _Mirror[str | None](AsyncHub.lease, None)
    client_id = _Mirror[int | None](AsyncHub.client_id, None)
    heartbeat_interval = _Mirror[float](AsyncHub.heartbeat_interval, 0.0)
    hub_version = _Mirror[str](AsyncHub.hub_version, "")
    hub_reachable = _Mirror[bool](AsyncHub.hub_reachable, False)
    rehellos = _Mirror[int](AsyncHub.rehellos, 0)
    upstream_state = _Mirror[str](AsyncHub.upstream_state, "UNKNOWN")
    lane_attached = _Mirror[bool](AsyncHub.lane_attached, False)
    lane_ticks_attached = _Mirror[bool](AsyncHub.lane_ticks_attached, False)

    # By hand: False (not ``NotConnected``) before ``connect()`` and after ``close()``.
    def is_connected(self) -> bool:
        """True when the SDK holds a live lease, the hub answers, and its upstream is up."""
        return self._async is not None and self._async.is_connected()

    # By hand: computed on the SDK thread, since it walks the topic table that thread
    # mutates (a property cannot be generated by ``_blocking``).
    @property
    def stats(self) -> dict[str, int]:
        """Counters: events received, gaps recovered, stale events dropped, re-hellos."""
        return self._call(self._stats())

    async def _stats(self) -> dict[str, int]:
        return self.async_hub.stats

    wait_connected = _blocking(AsyncHub.wait_connected)
    # Handlers run on the SDK thread and must not block it (a blocking ``Hub`` call
    # there raises ``RuntimeError``); they may be coroutine functions.
    add_disconnect_handler = _direct(AsyncHub.add_disconnect_handler)
    add_connect_handler = _direct(AsyncHub.add_connect_handler)
    add_status_handler = _direct(AsyncHub.add_status_handler)
    add_error_handler = _direct(AsyncHub.add_error_handler)
    add_bulletin_handler = _direct(AsyncHub.add_bulletin_handler)
    report_lag = _direct(AsyncHub.report_lag)

    # ------------------------------------------------------------------ requests

    status = _blocking(AsyncHub.status)

    # By hand: the blocking subscription hands events from the SDK thread to the
    # script's thread through a queue (or calls ``callback`` on the SDK thread).
    # One overload per kind, as AsyncHub.subscribe's (a new kind adds its line here too).
    @overload
    def subscribe(self, contract: ContractArg, *, kind: Literal["ticks"] = ..., callback: OnEvent[Tick] = ..., queue_size: int = ..., **fields: Any) -> BlockingSubscription[Tick]: ...  # noqa: E501
    @overload
    def subscribe(self, contract: ContractArg, *, kind: Literal["bars"], callback: OnEvent[Bar] = ..., queue_size: int = ..., **fields: Any) -> BlockingSubscription[Bar]: ...  # noqa: E501
    @overload
    def subscribe(self, contract: ContractArg, *, kind: Literal["depth"], callback: OnEvent[DepthBook] = ..., queue_size: int = ..., **fields: Any) -> BlockingSubscription[DepthBook]: ...  # noqa: E501
    @overload
    def subscribe(self, contract: ContractArg, *, kind: TbtKind, callback: OnEvent[TickByTick] = ..., queue_size: int = ..., **fields: Any) -> BlockingSubscription[TickByTick]: ...  # noqa: E501
    @overload
    def subscribe(self, contract: ContractArg, *, kind: str, callback: OnEvent[Event] = ..., queue_size: int = ..., **fields: Any) -> BlockingSubscription[Event]: ...  # noqa: E501

    def subscribe(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Any], Any] | None = None,
        queue_size: int = 10_000,
        **fields: Any,
    ) -> BlockingSubscription[Any]:
        """Like ``AsyncHub.subscribe``; read it with ``for tick in sub`` or ``sub.get()``.

        With ``callback``, it is called on the SDK thread instead of queueing.
        """
        blocking: BlockingSubscription[Any] = BlockingSubscription(self, queue_size)
        sink = callback if callback is not None else blocking._push
        blocking._inner = self._call(self._subscribe(blocking, contract, kind, sink, fields))
        return blocking

    async def _subscribe(
        self, blocking: BlockingSubscription[Any], contract: str | int | ContractSpec,
        kind: str, sink: Callable[[Any], Any], fields: dict[str, Any], batches: bool = False,
    ) -> Subscription[Any]:
        inner: Subscription[Any]
        if batches:
            inner = await self.async_hub.subscribe_batches(
                contract, kind=kind, callback=sink, **fields)
        else:
            inner = await self.async_hub.subscribe(contract, kind=kind, callback=sink, **fields)
        inner.on_close = blocking._ended  # set on the SDK thread before any event can end it
        return inner

    # By hand, as ``subscribe``: ``for batch in sub`` reads ``Batch``es in the script's
    # thread, or ``callback(batch)`` runs on the SDK thread.
    def subscribe_batches(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Batch], Any] | None = None,
        queue_size: int = 10_000,
        **fields: Any,
    ) -> BlockingSubscription[Any]:  # yields Batch (not an Event)
        """Like ``AsyncHub.subscribe_batches``; ``for batch in sub`` or ``sub.get()``."""
        blocking: BlockingSubscription[Any] = BlockingSubscription(self, queue_size)
        sink = callback if callback is not None else blocking._push
        blocking._inner = self._call(
            self._subscribe(blocking, contract, kind, sink, fields, batches=True))
        return blocking

    # A tap's callback runs on the SDK thread (``for`` over a tap works on AsyncHub only).
    listen = _blocking(AsyncHub.listen)

    # By hand: takes the ``BlockingSubscription`` that ``subscribe`` returned.
    def unsubscribe(self, sub: BlockingSubscription[Any]) -> None:
        """Same as ``sub.close()``."""
        sub.close()

    snapshot = _blocking(AsyncHub.snapshot)
    replay = _blocking(AsyncHub.replay)  # over NATS (docs/scale-out.md)
    last_values = _blocking(AsyncHub.last_values)
    contract_details = _blocking(AsyncHub.contract_details)
    historical_bars = _blocking(AsyncHub.historical_bars)
    historical_ticks = _blocking(AsyncHub.historical_ticks)
    option_chain = _blocking(AsyncHub.option_chain)
    calculate_implied_volatility = _blocking(AsyncHub.calculate_implied_volatility)
    calculate_option_price = _blocking(AsyncHub.calculate_option_price)
    matching_symbols = _blocking(AsyncHub.matching_symbols)
    lease_client_id = _blocking(AsyncHub.lease_client_id)
    renew_client_id = _blocking(AsyncHub.renew_client_id)
    release_client_id = _blocking(AsyncHub.release_client_id)
    names = _blocking(AsyncHub.names)
    forget_name = _blocking(AsyncHub.forget_name)

    # ------------------------------------------------------------------ orders and account
    # Same arguments and refusals (``OrderRejectedError``) as ``AsyncHub``. The ``Order``
    # objects are updated on the SDK thread; wait for them from the script's thread with
    # ``hub.wait_done(order, timeout)`` or ``order.wait_until_blocking(predicate, timeout)``.

    place_order = _blocking(AsyncHub.place_order)
    what_if_order = _blocking(AsyncHub.what_if_order)

    # Only here: the asyncio form is ``await order.wait_done(timeout)``.
    def wait_done(self, order: Order, timeout: float | None = None) -> Order:
        """Block until ``order`` is filled, cancelled or rejected; ``HubTimeout`` after
        ``timeout`` seconds."""
        return order.wait_done_blocking(timeout)

    modify_order = _blocking(AsyncHub.modify_order)
    cancel_order = _blocking(AsyncHub.cancel_order)
    cancel_all_orders = _blocking(AsyncHub.cancel_all_orders)
    global_cancel = _blocking(AsyncHub.global_cancel)
    orders = _direct(AsyncHub.orders)
    open_orders = _blocking(AsyncHub.open_orders)
    completed_orders = _blocking(AsyncHub.completed_orders)
    executions = _blocking(AsyncHub.executions)
    positions = _blocking(AsyncHub.positions)
    portfolio = _blocking(AsyncHub.portfolio)
    account_values = _blocking(AsyncHub.account_values)
    account_summary = _blocking(AsyncHub.account_summary)
    account_summary_rows = _blocking(AsyncHub.account_summary_rows)
    pnl = _blocking(AsyncHub.pnl)

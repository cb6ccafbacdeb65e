"""``Hub``: a thread-safe blocking facade over ``AsyncHub``.

The asyncio core runs on its own event loop in one background daemon thread; every
blocking method submits a coroutine there with ``run_coroutine_threadsafe`` and
waits for its result, so any number of script threads may call one ``Hub``. No
``nest_asyncio``: the script's own thread never runs the loop, and an asyncio
program should use ``AsyncHub`` directly.

Callbacks (subscription callbacks, connect/disconnect handlers) run on the SDK's
thread and must not block it; the blocking iterator is the way to consume ticks
in the script's own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from ibhub.client.async_hub import AsyncHub
from ibhub.client.errors import HubError, HubTimeout, NotConnected
from ibhub.client.orders import Order
from ibhub.client.subscription import Subscription
from ibhub.client.upstream_watch import Handler
from ibhub.protocol import (
    AccountValue,
    BarData,
    ContractInfo,
    ContractSpec,
    ErrorEvent,
    Event,
    ExecutionInfo,
    OrderInfo,
    PortfolioItem,
    PositionInfo,
    StatusReply,
)

T = TypeVar("T")
_CLOSED: Any = object()


class BlockingSubscription:
    """A subscription read from a plain thread: ``for tick in sub:`` or ``sub.get()``."""

    def __init__(self, hub: Hub, maxsize: int) -> None:
        self._hub = hub
        self._queue: queue.Queue[Event] = queue.Queue(maxsize=max(1, maxsize))
        self._inner: Subscription | None = None
        self.dropped = 0

    def _push(self, event: Event) -> None:
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
    def inner(self) -> Subscription:
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
    def latest(self) -> Event | None:
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

    def get(self, timeout: float | None = None) -> Event:
        """The next event; ``HubTimeout`` after ``timeout`` s, ``StopIteration`` once closed."""
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise HubTimeout(f"no event on {self.topic} within {timeout}s") from None
        if item is _CLOSED:
            self._push(_CLOSED)  # wake other readers
            raise StopIteration
        return item

    def __iter__(self) -> Iterator[Event]:
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

    def is_connected(self) -> bool:
        return self._async is not None and self._async.is_connected()

    @property
    def lease(self) -> str | None:
        return self._async.lease if self._async else None

    @property
    def client_id(self) -> int | None:
        return self._async.client_id if self._async else None

    @property
    def upstream_state(self) -> str:
        return self._async.upstream_state if self._async else "UNKNOWN"

    @property
    def stats(self) -> dict[str, int]:
        return self._call(self._stats())

    async def _stats(self) -> dict[str, int]:
        return self.async_hub.stats

    def wait_connected(self, timeout: float | None = None) -> bool:
        """Block until the hub's upstream is connected; False if ``timeout`` passes first."""
        return self._call(self.async_hub.wait_connected(timeout))

    def add_disconnect_handler(self, fn: Handler) -> None:
        """``fn(status)`` on the SDK thread, once each time the upstream goes down."""
        self.async_hub.add_disconnect_handler(fn)

    def add_connect_handler(self, fn: Handler) -> None:
        """``fn(status)`` on the SDK thread, once each time the upstream comes back."""
        self.async_hub.add_connect_handler(fn)

    def add_status_handler(self, fn: Handler) -> None:
        self.async_hub.add_status_handler(fn)

    def add_error_handler(self, fn: Callable[[ErrorEvent], Any]) -> None:
        self.async_hub.add_error_handler(fn)

    # ------------------------------------------------------------------ requests

    def status(self) -> StatusReply:
        return self._call(self.async_hub.status())

    def subscribe(
        self,
        contract: str | int | ContractSpec,
        *,
        kind: str = "ticks",
        callback: Callable[[Event], Any] | None = None,
        queue_size: int = 10_000,
        **fields: Any,
    ) -> BlockingSubscription:
        """Like ``AsyncHub.subscribe``; read it with ``for tick in sub`` or ``sub.get()``.

        With ``callback``, it is called on the SDK thread instead of queueing.
        """
        blocking = BlockingSubscription(self, queue_size)
        sink = callback if callback is not None else blocking._push
        blocking._inner = self._call(self._subscribe(blocking, contract, kind, sink, fields))
        return blocking

    async def _subscribe(
        self, blocking: BlockingSubscription, contract: str | int | ContractSpec, kind: str,
        sink: Callable[[Event], Any], fields: dict[str, Any],
    ) -> Subscription:
        inner = await self.async_hub.subscribe(contract, kind=kind, callback=sink, **fields)
        inner.on_close = blocking._ended  # set on the SDK thread before any event can end it
        return inner

    def unsubscribe(self, sub: BlockingSubscription) -> None:
        """Same as ``sub.close()``."""
        sub.close()

    def snapshot(self, topic: str) -> dict[str, Event]:
        return self._call(self.async_hub.snapshot(topic))

    def contract_details(
        self, contract: str | int | ContractSpec, **fields: Any
    ) -> list[ContractInfo]:
        return self._call(self.async_hub.contract_details(contract, **fields))

    def historical_bars(self, contract: str | int | ContractSpec, **options: Any) -> list[BarData]:
        return self._call(self.async_hub.historical_bars(contract, **options))

    def lease_client_id(
        self, name: str | None = None, ttl: float = 0.0, *, tied: bool = False
    ) -> int:
        return self._call(self.async_hub.lease_client_id(name, ttl, tied=tied))

    def release_client_id(self, client_id: int) -> None:
        self._call(self.async_hub.release_client_id(client_id))

    # ------------------------------------------------------------------ orders and account
    # Same arguments and refusals (``OrderRejectedError``) as ``AsyncHub``. The ``Order``
    # objects are updated on the SDK thread; wait for them from the script's thread with
    # ``hub.wait_done(order, timeout)`` or ``order.wait_until_blocking(predicate, timeout)``.

    def place_order(
        self, contract: str | int | ContractSpec, action: str, quantity: float, **options: Any
    ) -> Order:
        """Like ``AsyncHub.place_order`` (``order_type``, ``limit_price``, ``tif``, ...)."""
        return self._call(self.async_hub.place_order(contract, action, quantity, **options))

    def wait_done(self, order: Order, timeout: float | None = None) -> Order:
        """Block until ``order`` is filled, cancelled or rejected; ``HubTimeout`` after
        ``timeout`` seconds."""
        return order.wait_done_blocking(timeout)

    def modify_order(
        self,
        order: Order | int,
        quantity: float | None = None,
        limit_price: float | None = None,
        stop_price: float | None = None,
    ) -> Order:
        return self._call(self.async_hub.modify_order(order, quantity, limit_price, stop_price))

    def cancel_order(self, order: Order | int) -> Order:
        return self._call(self.async_hub.cancel_order(order))

    def cancel_all_orders(self) -> list[int]:
        return self._call(self.async_hub.cancel_all_orders())

    def global_cancel(self) -> list[int]:
        return self._call(self.async_hub.global_cancel())

    def orders(self) -> list[Order]:
        return self.async_hub.orders()

    def open_orders(self, scope: str = "mine") -> list[OrderInfo]:
        return self._call(self.async_hub.open_orders(scope))

    def completed_orders(self, scope: str = "mine") -> list[OrderInfo]:
        return self._call(self.async_hub.completed_orders(scope))

    def executions(self, scope: str = "mine") -> list[ExecutionInfo]:
        return self._call(self.async_hub.executions(scope))

    def positions(self, account: str = "") -> list[PositionInfo]:
        return self._call(self.async_hub.positions(account))

    def portfolio(self, account: str = "") -> list[PortfolioItem]:
        return self._call(self.async_hub.portfolio(account))

    def account_values(self, account: str = "") -> list[AccountValue]:
        return self._call(self.async_hub.account_values(account))

    def account_summary(
        self, tags: list[str] | None = None, account: str = ""
    ) -> dict[str, AccountValue]:
        return self._call(self.async_hub.account_summary(tags, account))

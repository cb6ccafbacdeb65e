"""Background tasks owned by one object: :class:`TaskSet`.

The event loop keeps only a weak reference to a task, so a task nobody holds may be
collected mid-flight, and an exception in a task nobody awaits is lost (at best a
"Task exception was never retrieved" at collection time). A ``TaskSet`` holds each
task until it ends, logs an unexpected exception on the owner's logger when it ends,
and cancels and awaits them all when the owner closes.

It lives at the top of the package, importing nothing of ibhub but :mod:`ibhub.eager`
(which imports nothing), because the SDK
(``client/``), the simulator (``sim/``), the order service (``orders/``), the hub and
the front door all spawn tasks and none of them may import the others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from ibhub.eager import eager_task

T = TypeVar("T")

_log = logging.getLogger(__name__)


class TaskSet:
    """Spawned tasks, held until they end; cancelled and awaited together on close."""

    __slots__ = ("_log", "_tasks", "what")

    def __init__(self, logger: logging.Logger | None = None, what: str = "background task"):
        self._log = logger if logger is not None else _log
        self.what = what  # how a failure is named in the log ("background fault", ...)
        self._tasks: set[asyncio.Task[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, T], name: str | None = None, *,
              eager: bool = False) -> asyncio.Task[T]:
        """Run ``coro`` as a task of the running loop, held until it ends. ``eager``: its
        first step runs now, inside this call (:mod:`ibhub.eager`)."""
        loop = asyncio.get_running_loop()
        task = eager_task(loop, coro, name) if eager else loop.create_task(coro, name=name)
        if task.done():  # finished in its eager first step
            self._done(task)
            return task
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def __len__(self) -> int:
        return len(self._tasks)

    def __iter__(self) -> Iterator[asyncio.Task[Any]]:
        return iter(list(self._tasks))

    def cancel(self) -> list[asyncio.Task[Any]]:
        """Cancel every task (without waiting) but the one calling; returns them.

        A task of the set may close its owner (a script's callback closing the SDK):
        it is left to finish that close rather than cancel itself half-way.
        """
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop
            current = None
        tasks = [task for task in self._tasks if task is not current]
        for task in tasks:
            task.cancel()
        return tasks

    async def close(self) -> None:
        """Cancel every task and wait until they have all ended (their outcomes,
        cancellation or failure, are not raised here)."""
        tasks = self.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s %s failed", self.what, task.get_name(), exc_info=exc)

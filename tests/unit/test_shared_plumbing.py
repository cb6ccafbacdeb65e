"""The shared plumbing: ``wire.EdgeReader`` (one edge-triggered ZeroMQ reader) and
``tasks.TaskSet`` (spawn, hold, log a failure, cancel and await on close), on real sockets."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
import zmq
import zmq.asyncio

from ibhub import wire
from ibhub.tasks import TaskSet

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def pair() -> Any:
    ctx = zmq.asyncio.Context()
    pull = ctx.socket(zmq.PULL)
    pull.setsockopt(zmq.LINGER, 0)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = zmq.Socket(ctx, zmq.PUSH)
    push.setsockopt(zmq.LINGER, 0)
    push.connect(f"tcp://127.0.0.1:{port}")
    yield pull, push
    push.close(0)
    pull.close(0)
    ctx.term()


async def _until(condition: Any) -> None:
    while not condition():
        await asyncio.sleep(0.001)


async def test_reader_drains_bursts_larger_than_its_batch(pair: Any) -> None:
    pull, push = pair
    got: list[list[bytes]] = []
    reader = wire.EdgeReader(pull, got.append, batch=7, name="test")
    for i in range(50):  # queued before the reader starts: start() drains them too
        push.send_multipart([b"a", str(i).encode()])
    reader.start()
    try:
        await _until(lambda: len(got) == 50)
        for i in range(50, 120):
            push.send_multipart([b"a", str(i).encode()])
        await _until(lambda: len(got) == 120)
        assert [int(f[1]) for f in got] == list(range(120))
        assert all(len(f) == 2 for f in got)
    finally:
        await reader.stop()
    push.send_multipart([b"a", b"late"])
    await asyncio.sleep(0.05)
    assert len(got) == 120  # stopped: nothing more is handled


async def test_reader_falls_back_to_polling_without_add_reader(
    pair: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Windows' proactor loop has no add_reader: the reader polls instead."""
    pull, push = pair
    loop = asyncio.get_running_loop()
    add_reader = loop.add_reader
    refused: list[object] = []

    def refuse_first(fd: Any, callback: Any, *args: Any) -> None:
        if not refused:  # the reader's own; then pyzmq's poller
            refused.append(fd)
            raise NotImplementedError
        add_reader(fd, callback, *args)

    monkeypatch.setattr(loop, "add_reader", refuse_first)
    got: list[list[bytes]] = []
    reader = wire.EdgeReader(pull, got.append, batch=5, name="test")
    reader.start()
    try:
        for i in range(30):
            push.send_multipart([str(i).encode()])
        await _until(lambda: len(got) == 30)
        assert refused
        assert [int(f[0]) for f in got] == list(range(30))
    finally:
        await reader.stop()


async def test_task_set_holds_logs_and_closes(caplog: pytest.LogCaptureFixture) -> None:
    owner = logging.getLogger("ibhub.test_owner")
    tasks = TaskSet(owner, "background job")
    gate = asyncio.Event()

    async def fail() -> None:
        raise ValueError("boom")

    async def wait() -> None:
        await gate.wait()

    with caplog.at_level(logging.ERROR, logger="ibhub.test_owner"):
        failing = tasks.spawn(fail(), name="failing")
        waiting = tasks.spawn(wait(), name="waiting")
        assert len(tasks) == 2
        await asyncio.wait((failing,))
        await asyncio.sleep(0)  # done callbacks run on the next turn
    assert len(tasks) == 1
    [record] = [r for r in caplog.records if r.name == "ibhub.test_owner"]
    assert "background job failing failed" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], ValueError)
    await tasks.close()
    assert waiting.cancelled()
    assert len(tasks) == 0


async def test_task_set_closed_from_one_of_its_tasks_finishes_that_task() -> None:
    """A task of the set may close its owner: it is not cancelled half-way."""
    tasks = TaskSet()
    other = tasks.spawn(asyncio.sleep(30))
    finished = asyncio.Event()

    async def closer() -> None:
        await tasks.close()
        await asyncio.sleep(0)  # still running: not cancelled by its own close
        finished.set()

    task = tasks.spawn(closer())
    await asyncio.wait((task,))
    assert finished.is_set() and other.cancelled() and not task.cancelled()

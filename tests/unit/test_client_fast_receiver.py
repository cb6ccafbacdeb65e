"""``wire.fast_receiver``: the cheap NOBLOCK multipart receive keeps every frame boundary."""

from __future__ import annotations

import pytest
import zmq

from ibhub.wire import fast_receiver
from tests.helpers import wait_until


async def test_frames_of_each_message_stay_together() -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    push = ctx.socket(zmq.PAIR)
    pull = ctx.socket(zmq.PAIR)
    try:
        push.bind("inproc://fast-receiver")
        pull.connect("inproc://fast-receiver")
        receive = fast_receiver(pull)
        with pytest.raises(zmq.Again):
            receive()  # nothing queued
        sent = [[b"tick.A", b"payload"], [b"only"], [b"a", b"b", b"c"], [b"tick.B", b""]]
        for frames in sent:
            push.send_multipart(frames)
        await wait_until(lambda: pull.poll(0), 2.0, "messages queued")
        assert [receive() for _ in sent] == sent
        with pytest.raises(zmq.Again):
            receive()
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()

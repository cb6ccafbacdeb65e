"""Fuzzing the simulated Gateway's wire parser (extends tests/sim/test_core_badinput.py,
whose seeded loop covers bad *fields*; here hypothesis varies the *framing*).

* ``FrameReader`` alone: any bytes, cut anywhere, give messages or ``ProtocolError``,
  nothing else; valid frames cut at arbitrary points decode to the same messages.
* Over TCP: bad length prefixes (0, above ``max_frame``, random), truncated frames
  followed by a hang-up, random bytes, before and after the handshake. The simulator
  never crashes, keeps listening, and a client connected throughout keeps getting
  answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ibhub.sim import SimConfig, SimGateway
from ibhub.sim.codec import FrameReader, ProtocolError, frame
from tests.ibclient import IB
from tests.reliability import fuzz_support as fz
from tests.reliability.harness import Figures

MAX_FRAME = 4096
fields = st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"],
                                                   exclude_characters="\x00"), max_size=20),
                  min_size=1, max_size=12)


@fz.FUZZ
@given(chunks=st.lists(st.binary(max_size=300), max_size=20))
def test_frame_reader_any_bytes(chunks: list[bytes]) -> None:
    reader = FrameReader(max_frame=MAX_FRAME)
    for chunk in chunks:
        try:
            for msg in reader.feed(chunk):
                assert all(isinstance(f, str) for f in msg)
        except ProtocolError:
            assert reader.buffered == 0  # a broken stream is discarded, not half-kept
    fz.TRIED["sim parser: random byte streams"] += 1


@fz.FUZZ
@given(msgs=st.lists(fields, min_size=1, max_size=10), cuts=st.lists(st.integers(0, 2000)))
def test_frame_reader_any_split(msgs: list[list[str]], cuts: list[int]) -> None:
    data = b"".join(frame(m) for m in msgs)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    reader = FrameReader(max_frame=1 << 20)
    out: list[list[str]] = []
    for a, b in itertools.pairwise(points):
        out.extend(reader.feed(data[a:b]))
    assert out == msgs and reader.buffered == 0
    fz.TRIED["sim parser: valid frames split anywhere"] += 1


class Health:
    def __init__(self, sim: SimGateway, ib: IB) -> None:
        self.sim, self.ib = sim, ib

    async def check(self) -> None:
        assert self.sim.listening and self.ib.isConnected()
        assert await asyncio.wait_for(self.ib.reqCurrentTimeAsync(), 3) is not None


@pytest.fixture
async def health() -> AsyncIterator[Health]:
    async with SimGateway(SimConfig(host="127.0.0.1", port=0, seed=7, max_frame=MAX_FRAME,
                                    max_msg_rate=1e9)) as sim:
        ib = IB()
        await ib.connectAsync("127.0.0.1", sim.port, clientId=1, timeout=5)
        try:
            yield Health(sim, ib)
        finally:
            ib.disconnect()
    for name, n in sorted((fz.TRIED - fz.SAVED).items()):
        Figures(f"bad input: {name}", attempts=n, recoveries=n).save()
    fz.SAVED.update(fz.TRIED - fz.SAVED)


HELLO = b"API\0" + struct.pack(">I", 9) + b"v157..176"
segment = st.one_of(
    st.builds(lambda f: ("frame", frame(f)), fields),
    st.builds(lambda n: ("bad prefix", struct.pack(">I", n)),
              st.one_of(st.just(0), st.integers(MAX_FRAME + 1, 2**32 - 1))),
    st.builds(lambda n, body: ("truncated", struct.pack(">I", n) + body[: max(0, n - 1)]),
              st.integers(1, MAX_FRAME), st.binary(max_size=200)),
    st.builds(lambda b: ("bytes", b), st.binary(max_size=200)),
)


@fz.FUZZ
@given(handshake=st.sampled_from(["none", "hello", "started"]),
       segments=st.lists(segment, min_size=1, max_size=8))
async def test_sim_survives_bad_framing(health: Health, handshake: str,
                                        segments: list[tuple[str, bytes]]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", health.sim.port)
    try:
        if handshake != "none":
            writer.write(HELLO)
        if handshake == "started":
            writer.write(frame([71, 2, 50 + fz.TRIED["sim over TCP: bad framing"] % 40, ""]))
        for _kind, data in segments:
            writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    await health.check()
    fz.TRIED["sim over TCP: bad framing"] += 1

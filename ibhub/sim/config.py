"""SimConfig: every knob of the simulated Gateway in one frozen object."""

from __future__ import annotations

from dataclasses import dataclass

from ibhub.sim.replay import ReplaySpec

__all__ = ["SimConfig"]


@dataclass(frozen=True)
class SimConfig:
    """Settings of one simulated Gateway.

    The first block is the shared contract the hub and tests rely on; the second
    holds simulator details with defaults that match a real Gateway.
    """

    host: str = "127.0.0.1"
    port: int = 0
    seed: int = 1
    tick_rate: float = 4.0  # market events per second per streaming instrument
    accounts: tuple[str, ...] = ("DU1234567",)
    max_lines: int = 100  # market-data lines (reqMktData streams + tick-by-tick)
    max_depth: int = 3  # market-depth subscriptions at once (IB's default; then error 309)
    max_msg_rate: float = 50.0  # messages/s per client before error 100
    max_clients: int = 32
    max_order_qty: float = 1_000_000
    stamp_sizes: bool = False  # tickPrice size = send time in integer microseconds
    # The first permId (and the exec-id prefix) of this run. 0 = from the wall clock
    # (ibhub.sim.broker.clock_perm_id): like a real Gateway's, permIds then keep growing
    # across restarts, so a restarted simulator never hands out a permId (or execId)
    # that a hub's order journal already holds from an earlier run.
    first_perm_id: int = 0

    rt_bar_seconds: float = 5.0  # real-time bar period (IB: always 5 s)
    slice_seconds: float = 0.01  # streaming timer slice: one write per client per slice
    max_frame: int = 1 << 20  # incoming frames larger than this close the socket
    max_hist_bars: int = 100_000  # larger historical requests get error 162
    server_version: int = 176
    replay: ReplaySpec | None = None  # stream a recording instead of random walks

    def __post_init__(self) -> None:
        if not self.accounts or any(not a for a in self.accounts):
            raise ValueError("SimConfig.accounts needs at least one non-empty account id")
        if self.tick_rate < 0:
            raise ValueError(f"tick_rate must be >= 0, got {self.tick_rate}")
        if self.max_msg_rate <= 0:
            raise ValueError(f"max_msg_rate must be > 0, got {self.max_msg_rate}")
        if isinstance(self.accounts, list):
            object.__setattr__(self, "accounts", tuple(self.accounts))

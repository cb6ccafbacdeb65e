"""ibhub.sim: a simulated IB Gateway that speaks the real TWS socket protocol (sv 176).

    from ibhub.sim import SimGateway, SimConfig
    async with SimGateway(SimConfig(seed=1)) as sim:
        ...  # IB().connectAsync("127.0.0.1", sim.port, clientId=1)

See docs/simulator.md for what it models and how to inject faults.
"""

from ibhub.sim.config import SimConfig
from ibhub.sim.server import SimGateway
from ibhub.sim.streaming import SimSubscription

__all__ = ["SimConfig", "SimGateway", "SimSubscription"]

"""Compatibility name for :mod:`ibhub.tws.codec`, where the TWS framing now lives.

The simulator and the hub's front door share one codec; tests, benchmarks and
scripts that import ``ibhub.sim.codec`` keep working through this re-export.
"""

from ibhub.tws.codec import *  # noqa: F403
from ibhub.tws.codec import __all__, pack_len, split_fields  # noqa: F401

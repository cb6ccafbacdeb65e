"""ibhub: one process owns the Interactive Brokers API connection and serves many scripts.

Importing :mod:`ibhub` is cheap on purpose: it pulls in neither ``ib_insync`` nor
ZeroMQ. Scripts import :mod:`ibhub.client`; the hub itself lives in :mod:`ibhub.hub.server`.
"""

__version__ = "0.1.0"

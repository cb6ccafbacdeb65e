"""The running hub: composition root, market-data service, request server, leases,
names, subscriptions, fan-out, security, limits, and ops (health, metrics, alerts)."""

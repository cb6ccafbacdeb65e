"""Trading rules and order state: service, manager, store, updates, the upstream
order port, journal, risk and account. Never imports the hub, the IB library or the
front door; the composition root (``ibhub.hub.server``) wires them in."""

"""The hub's TWS-protocol front door: existing TWS API scripts change one number,
their port, and share the hub's connection (docs/tws-front-door.md).

    hub = HubServer(HubSettings(tws_port=7497))      # or: ibhub run --tws-port 7497
    # or, on a started hub:
    door = await FrontDoor.start_for(hub, port=0); print(door.tws_port)
"""

from ibhub.frontdoor.server import FrontDoor

__all__ = ["FrontDoor"]

"""A loopback HTTP control port for a running simulator (operators rehearsing faults).

    POST /fault/restart?seconds=5
    POST /fault/close_port            POST /fault/open_port
    POST /fault/stall_handshakes      POST /fault/unstall_handshakes
    POST /fault/connectivity_lost?restored=data_lost|data_kept&seconds=0.5
    POST /fault/farm_blip?seconds=3
    POST /fault/freeze?seconds=10
    POST /fault/hold_client_id?client_id=1&seconds=30
    POST /tick_rate?hz=100
    POST /close_auction[?con_id=265598]   (MOC/LOC orders trade at the close)
    GET  /status

Timed faults run in the background and the request returns 202 at once, so a
``restart`` does not hold the HTTP call open. It binds 127.0.0.1 only.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ibhub.sim.faults import KINDS

if TYPE_CHECKING:
    from ibhub.sim.server import SimGateway

__all__ = ["ControlServer"]

log = logging.getLogger(__name__)


def _num(request: web.Request, name: str, default: float | None = None) -> float:
    raw = request.query.get(name)
    if raw is None:
        if default is None:
            raise web.HTTPBadRequest(text=f"missing query parameter {name!r}\n")
        return default
    try:
        return float(raw)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}={raw!r} is not a number\n") from None


class ControlServer:
    """HTTP control for one gateway on ``host:port`` (port 0 picks a free port)."""

    def __init__(self, gateway: SimGateway, host: str = "127.0.0.1", port: int = 0) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None
        app = web.Application()
        app.router.add_post("/fault/{kind}", self._fault)
        app.router.add_post("/tick_rate", self._tick_rate)
        app.router.add_post("/close_auction", self._close_auction)
        app.router.add_get("/status", self._status)
        self._app = app

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        self._runner = web.AppRunner(self._app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None)  # the bound port when port=0
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("simulator control on %s", self.url)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _fault(self, request: web.Request) -> web.Response:
        kind = request.match_info["kind"]
        gw = self.gateway
        if kind not in KINDS:
            raise web.HTTPNotFound(text=f"unknown fault {kind!r}; one of {', '.join(KINDS)}\n")
        detail: dict[str, Any] = {"fault": kind}
        if kind == "restart":
            seconds = _num(request, "seconds", 5.0)
            gw.spawn(gw.restart(seconds))
            detail["seconds"] = seconds
        elif kind == "close_port":
            await gw.close_port()
        elif kind == "open_port":
            await gw.open_port()
        elif kind == "stall_handshakes":
            gw.stall_handshakes(request.query.get("on", "1") not in ("0", "false", "off"))
        elif kind == "unstall_handshakes":
            gw.stall_handshakes(False)
        elif kind == "connectivity_lost":
            restored = request.query.get("restored", "data_lost")
            if restored not in ("data_lost", "data_kept"):
                raise web.HTTPBadRequest(text="restored must be data_lost or data_kept\n")
            seconds = _num(request, "seconds", 0.5)
            gw.spawn(gw.connectivity_lost(restored, seconds))
            detail.update(restored=restored, seconds=seconds)
        elif kind == "farm_blip":
            seconds = _num(request, "seconds", 3.0)
            gw.spawn(gw.farm_blip(seconds))
            detail["seconds"] = seconds
        elif kind == "freeze":
            seconds = _num(request, "seconds", 10.0)
            gw.spawn(gw.freeze(seconds))
            detail["seconds"] = seconds
        elif kind == "hold_client_id":
            client_id = int(_num(request, "client_id"))
            seconds = _num(request, "seconds", 30.0)
            gw.hold_client_id(client_id, seconds)
            detail.update(client_id=client_id, seconds=seconds)
        log.warning("control: fault %s", detail)
        return web.json_response(detail, status=202)

    async def _tick_rate(self, request: web.Request) -> web.Response:
        hz = _num(request, "hz")
        if hz < 0:
            raise web.HTTPBadRequest(text="hz must be >= 0\n")
        self.gateway.set_tick_rate(hz)
        return web.json_response({"tick_rate": hz})

    async def _close_auction(self, request: web.Request) -> web.Response:
        con_id = int(_num(request, "con_id")) if "con_id" in request.query else None
        filled = self.gateway.broker.closing_auction(con_id)
        return web.json_response({"filled": filled})

    async def _status(self, request: web.Request) -> web.Response:
        gw = self.gateway
        return web.json_response({
            "port": gw.port,
            "listening": gw.listening,
            "handshakes_stalled": gw.handshakes_stalled,
            "farm_ok": gw.farm_ok,
            "data_halted": gw.streams.halted,
            "tick_rate": gw.streams.tick_rate,
            "clients": gw.connected_client_ids(),
            "subscriptions": len(gw.market_data_subscriptions()),
            "requests": {str(k): v for k, v in sorted(gw.request_counts.items())},
        })

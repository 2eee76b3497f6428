"""The listener process's HTTP server: ``/metrics``, ``/health`` and ``/ready``.

``garrison listen`` has no Faust app, so it serves these with aiohttp (a dependency of
Faust's already) on ``GARRISON_WEB_BIND`` and ``GARRISON_WEB_LISTENER_PORT`` (6067 by
default: a worker, on 6066, and a listener run side by side on one machine; in a
container each may use its own default). ``/ready`` answers 200 once every listener's
consumer has joined its group (``ListenerRunner.ready``), 503 until then;
``GARRISON_WEB_ENABLED=false`` turns the server off.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiohttp import web

from agents.listeners import ListenerRunner
from agents.logs import announce_ready
from agents.metrics import CONTENT_TYPE_LATEST, render

__all__ = ["listener_web_app", "serve_listeners"]

log = logging.getLogger(__name__)


def listener_web_app(runner: ListenerRunner) -> web.Application:
    """The aiohttp application of ``runner``'s process."""
    app_name = runner.settings.app
    names = [lst.name for lst in runner.registry.listeners]

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "app": app_name, "role": "listener"})

    async def ready(request: web.Request) -> web.Response:
        if runner.ready.is_set():
            return web.json_response({"ready": True, "app": app_name, "listeners": names})
        waiting = "the listeners' consumers joining their groups"
        return web.json_response({"ready": False, "waiting": waiting}, status=503)

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=render(runner.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.add_routes(
        [web.get("/health", health), web.get("/ready", ready), web.get("/metrics", metrics)]
    )
    return app


async def serve_listeners(runner: ListenerRunner) -> None:
    """Run ``runner`` with its HTTP server until it stops; then export the last spans."""
    settings = runner.settings
    site_runner: web.AppRunner | None = None
    if settings.web.enabled:
        site_runner = web.AppRunner(listener_web_app(runner), access_log=None)
        await site_runner.setup()
        await web.TCPSite(site_runner, settings.web.bind, settings.web.listener_port).start()

    async def say_ready() -> None:
        await runner.ready.wait()
        announce_ready(settings, [], role="listener", port=settings.web.listener_port)

    announced = asyncio.create_task(say_ready())
    try:
        await runner.run()
    finally:
        announced.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await announced
        if site_runner is not None:
            await site_runner.cleanup()
        if runner.tracing is not None:
            runner.tracing.shutdown()

"""The FastAPI application: one service context, the bounded work pool, the routes.

``create_app`` takes an ``Airside`` so that tests and ``airside serve`` build it the same
way; the server owns what it starts (the pool, background tasks) and closes them on
shutdown. Routes live one file per area in ``routes/``.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from airside.governance import audit as audit_log
from airside.governance.principals import Principal
from airside.server import console_pages, events_out, problems
from airside.server.auth_guard import AuthGuard
from airside.server.cameras.supervisor import CameraSupervisor
from airside.server.headers import SecurityHeaders, install_docs
from airside.server.limits import UploadLimit
from airside.server.metrics import AUDIT_APPEND_SECONDS, CAMERAS
from airside.server.middleware import RequestMetrics
from airside.server.routes import (
    admin,
    audit,
    camera_workers,
    cameras,
    events,
    galleries,
    health,
    matching,
    review,
    session,
    subjects,
)
from airside.server.work import WorkPool
from airside.services.app import Airside
from airside.services.retention import PurgeScheduler

API = "/api/v1"


def create_app(
    airside: Airside, *, cameras_file: Path | None = None, camera_actor: Principal | None = None
) -> FastAPI:
    """The app over ``airside``. ``cameras_file``: a cameras.toml whose enabled cameras run while
    the app does (``camera_actor``, by default the local administrator, provisions their
    principals and keys); a bad file raises ``CameraConfigError`` here, before serving."""
    st = airside.settings
    workers = st.server_workers or os.cpu_count() or 1
    supervisor = (
        CameraSupervisor.from_file(airside, cameras_file) if cameras_file is not None
        else CameraSupervisor(airside, [])
    )  # fmt: skip

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the models off the event loop: /readyz says "loading" until they are in.
        threading.Thread(target=lambda: airside.analyzer, name="load-models", daemon=True).start()
        if AUDIT_APPEND_SECONDS.observe not in audit_log.APPEND_OBSERVERS:
            audit_log.APPEND_OBSERVERS.append(AUDIT_APPEND_SECONDS.observe)
        CAMERAS.add(supervisor)
        await asyncio.to_thread(supervisor.start, camera_actor)
        # Retention, and erasures a crash cut short (once a minute old: services/erasure),
        # as in every long-running process.
        purger = PurgeScheduler(airside).start()
        app.state.ready = True
        try:
            async with events_out.running(app):  # event streams' watcher, webhooks, MQTT
                yield
        finally:
            app.state.ready = False
            await asyncio.to_thread(purger.stop)
            await asyncio.to_thread(supervisor.stop)
            CAMERAS.discard(supervisor)
            if AUDIT_APPEND_SECONDS.observe in audit_log.APPEND_OBSERVERS:
                audit_log.APPEND_OBSERVERS.remove(AUDIT_APPEND_SECONDS.observe)
            app.state.pool.close()

    app = FastAPI(
        title="Airside",
        version="1",
        summary="Consent-first biometric identity and safety analytics",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # served by headers.install_docs, under its own CSP
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.airside = airside
    app.state.ready = False
    app.state.pool = WorkPool(workers, st.server_queue, st.server_deadline_s)
    app.state.cameras = supervisor
    app.state.auth_guard = AuthGuard(st.auth_fail_limit, st.auth_fail_window_s, st.auth_lockout_s)
    app.add_middleware(UploadLimit, max_bytes=int(st.server_max_upload_mb * 1024 * 1024))
    app.add_middleware(SecurityHeaders)  # on every answer, a refused upload's too
    app.add_middleware(RequestMetrics)  # outermost: it times whatever the others answer
    problems.install(app)
    app.include_router(health.router)
    for area in (session, galleries, matching, subjects, review, events, cameras, camera_workers,
                 audit, admin):  # fmt: skip
        app.include_router(area.router, prefix=API, responses=problems.API_PROBLEMS)
    console_pages.install(app)
    install_docs(app, "/api/docs", f"{API}/openapi.json")
    return app

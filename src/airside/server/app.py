"""The FastAPI application: one service context, the bounded work pool, the routes.

``create_app`` takes an ``Airside`` so that tests and ``airside serve`` build it the same
way; the server owns what it starts (the pool, background tasks) and closes them on
shutdown. Routes live one file per area in ``routes/``.
"""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from airside.server import problems
from airside.server.limits import UploadLimit
from airside.server.routes import (
    admin,
    audit,
    cameras,
    events,
    galleries,
    health,
    matching,
    review,
    subjects,
)
from airside.server.work import WorkPool
from airside.services.app import Airside

API = "/api/v1"


def create_app(airside: Airside) -> FastAPI:
    st = airside.settings
    workers = st.server_workers or os.cpu_count() or 1

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Load the models off the event loop: /readyz says "loading" until they are in.
        threading.Thread(target=lambda: airside.analyzer, name="load-models", daemon=True).start()
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            app.state.pool.close()

    app = FastAPI(
        title="Airside",
        version="1",
        summary="Consent-first biometric identity and safety analytics",
        openapi_url=f"{API}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.airside = airside
    app.state.ready = False
    app.state.pool = WorkPool(workers, st.server_queue, st.server_deadline_s)
    app.add_middleware(UploadLimit, max_bytes=int(st.server_max_upload_mb * 1024 * 1024))
    problems.install(app)
    app.include_router(health.router)
    for area in (galleries, matching, subjects, review, events, cameras, audit, admin):
        app.include_router(area.router, prefix=API)
    return app

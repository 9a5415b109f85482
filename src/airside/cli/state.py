"""What one CLI invocation shares between its commands: settings, services, principal."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from airside.config import Settings
from airside.governance.principals import Principal
from airside.services.app import Airside


class State:
    def __init__(self, data_dir: Path | None, settings: Settings | None = None) -> None:
        self.data_dir = data_dir
        self._settings = settings
        self._app: Airside | None = None
        self._principal: Principal | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings(data_dir=self.data_dir) if self.data_dir else Settings()
        return self._settings

    @property
    def airside(self) -> Airside:
        if self._app is None:
            self._app = Airside(self.settings)
        return self._app

    @property
    def principal(self) -> Principal:
        """Who this command acts as: the holder of ``AIRSIDE_API_KEY`` when it is set,
        otherwise the local user (registered as administrator by a fresh install's first
        run). Set means set: an empty, blank or malformed key is refused like a forged one
        (AccessDenied ``bad_key``, audited), never taken for the local user; only an unset
        variable is."""
        if self._principal is None:
            from airside.services.principal_admin import authenticate, ensure_local_admin

            key = os.environ.get("AIRSIDE_API_KEY")
            if key is not None:
                self._principal = authenticate(self.airside, key)
            else:
                self._principal = ensure_local_admin(self.airside)
        return self._principal


def state(ctx: typer.Context) -> State:
    st = ctx.obj
    assert isinstance(st, State)
    return st

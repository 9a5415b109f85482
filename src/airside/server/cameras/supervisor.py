"""The camera supervisor: each enabled camera in its own worker process, restarted with
exponential back-off when it dies, its status kept for the API and /metrics.

One thread per camera (a :class:`_Runner`) provisions the camera's principal, issues it a
key for one worker's life (at most a day; revoked when the worker exits), starts
``python -m airside.server.cameras.worker`` with the server's settings in its environment
and the job on its stdin, and reads its status lines until it exits. Then:

* exit 0: the feed ended (a file) or the worker was stopped: ``ended`` / ``stopped``;
* ``EXIT_FAILED``: retrying cannot help (a missing file, a refused principal, a bad scene):
  ``failed`` with the worker's error, not restarted until an administrator asks;
* anything else (a crash, SIGKILL, out of memory): ``restarting``, then a new worker after
  ``backoff_s`` doubling up to ``max_backoff_s`` (back to ``backoff_s`` once a worker has
  stayed up ``stable_s``).

Stopping closes the worker's stdin (it stops cleanly, closing open tracks), then sends
SIGTERM, then SIGKILL. A worker whose server dies sees its stdin close and stops too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from airside.config import Settings
from airside.errors import AirsideError, ConflictError, NotFoundError
from airside.governance.principals import Principal
from airside.server.cameras import config as camera_files
from airside.server.cameras.config import CameraConfig
from airside.server.cameras.status import EXIT_FAILED, CameraStatus, decode_report
from airside.services import cameras as camera_admin
from airside.services import principal_admin
from airside.services.app import Airside
from airside.video.sources import safe_spec

log = logging.getLogger("airside.server.cameras")

#: A camera worker's key lives this long at most (it is revoked when the worker exits).
KEY_LIFETIME = timedelta(days=1)


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as the ``AIRSIDE_*`` environment that rebuilds them in a worker."""
    env: dict[str, str] = {}

    def put(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseSettings):
                put(f"{prefix}{name.upper()}_", value)
                continue
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            if isinstance(value, bool):
                value = "true" if value else "false"
            env[f"{prefix}{name.upper()}"] = str(value)

    put("AIRSIDE_", settings)
    return env


def worker_env(settings: Settings) -> dict[str, str]:
    """The server's environment, its ``AIRSIDE_*`` variables replaced by its settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRSIDE_")}
    env.update(settings_env(settings))
    env.setdefault("OMP_NUM_THREADS", "1")  # one camera, one core's worth of models
    return env


class _Runner:
    """One camera: its worker processes, one after another, and its status."""

    def __init__(
        self, sup: CameraSupervisor, camera: CameraConfig, actor: Principal | None
    ) -> None:
        self.sup = sup
        self.camera = camera
        self.actor = actor  # who provisions its principal and keys
        self.status = CameraStatus(camera.name)
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._proc: subprocess.Popen[str] | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        if not camera.enabled:
            self.status.enter("disabled")

    # -- control

    def start(self) -> None:
        if not self.camera.enabled:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.camera.name}",
                                        daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop (stdin closed, then SIGTERM, then SIGKILL) and wait."""
        self._stop.set()
        self._wake.set()
        proc = self._proc
        if proc is not None:
            _close_quietly(proc.stdin)
            try:
                proc.wait(timeout / 2)
            except subprocess.TimeoutExpired:
                proc.terminate()
                try:
                    proc.wait(timeout / 4)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the loop

    def _provision(self) -> Principal:
        if self.actor is None:
            self.actor = principal_admin.ensure_local_admin(self.sup.airside)
        return camera_admin.provision_principal(
            self.sup.airside, self.actor, self.camera.principal_name, list(self.camera.galleries)
        )

    def _run(self) -> None:
        backoff = self.sup.backoff_s
        principal: Principal | None = None
        while not self._stop.is_set():
            try:
                if principal is None:
                    principal = self._provision()
                if self.camera.remote:  # its worker runs elsewhere, with a key of its own
                    self.status.enter("remote")
                    return
                started = time.monotonic()
                code = self._one_worker()
            except AirsideError as e:  # the principal could not be provisioned or keyed
                self.status.enter("failed", str(e))
                return
            except Exception as e:  # e.g. the store is busy: retry like a crash
                log.exception("camera %s: starting a worker failed", self.camera.name)
                code, started = -1, time.monotonic()
                self.status.last_error = f"starting the worker failed: {type(e).__name__}"
            if self._stop.is_set():
                self.status.enter("stopped")
                return
            if code == 0:
                if self.status.state not in ("ended", "stopped"):
                    self.status.enter("ended")
                return
            if code == EXIT_FAILED:
                if self.status.state != "failed":
                    self.status.enter("failed", self._stderr_error() or "the worker failed")
                return
            if time.monotonic() - started >= self.sup.stable_s:
                backoff = self.sup.backoff_s
            if code != -1:
                self.status.enter("restarting", self._exit_error(code))
            else:
                self.status.enter("restarting")
            self._wake.wait(backoff)
            self._wake.clear()
            backoff = min(backoff * 2, self.sup.max_backoff_s)
            if not self._stop.is_set():
                self.status.restarts += 1

    def _one_worker(self) -> int:
        """Run one worker to its end; its exit code."""
        app, cam, actor = self.sup.airside, self.camera, self.actor
        assert actor is not None
        key = principal_admin.issue_key(app, actor, cam.principal_name, expires_in=KEY_LIFETIME)
        try:
            self.status.enter("starting")
            self.stderr_tail.clear()
            proc = subprocess.Popen(
                [sys.executable, "-m", "airside.server.cameras.worker"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=self.sup.env, text=True, encoding="utf-8", errors="replace", bufsize=1,
                close_fds=True,
            )  # fmt: skip
            self._proc = proc
            self.status.pid = proc.pid
            assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
            drain = threading.Thread(target=self._drain_stderr, args=(proc.stderr,),
                                     daemon=True)  # fmt: skip
            drain.start()
            job = {"camera": cam.model_dump(mode="json"), "key": key.secret}
            try:
                proc.stdin.write(json.dumps(job) + "\n")
                proc.stdin.flush()  # stdin stays open: closing it asks the worker to stop
            except OSError:
                pass
            if self._stop.is_set():
                _close_quietly(proc.stdin)
            for line in proc.stdout:
                report = decode_report(line)
                if report is not None:
                    self.status.worker_report(report)
            code = proc.wait()
            drain.join(timeout=5)
            _close_quietly(proc.stdin)
            return code
        finally:
            self._proc = None
            self.status.worker_ended()
            with contextlib.suppress(AirsideError):
                principal_admin.revoke_key(app, actor, key.key_id)

    def _drain_stderr(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip()
            if line:
                self.stderr_tail.append(line)

    def _stderr_error(self) -> str | None:
        return self.stderr_tail[-1] if self.stderr_tail else None

    def _exit_error(self, code: int) -> str:
        if code < 0:
            import signal

            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            return f"the worker was killed by {name}"
        last = self._stderr_error()
        return f"the worker exited with code {code}" + (f": {last}" if last else "")

    def as_dict(self) -> dict[str, Any]:
        cam = self.camera
        return {
            "name": cam.name,
            "source": safe_spec(cam.source),
            "galleries": list(cam.galleries),
            "scene": cam.scene,
            "detect_every": cam.detect_every,
            "redact": cam.redact,
            "enabled": cam.enabled,
            "loop": cam.loop,
            "remote": cam.remote,
            "principal": cam.principal_name,
            **self.status.as_dict(),
        }


def _close_quietly(stream: IO[str] | None) -> None:
    if stream is not None:
        with contextlib.suppress(OSError, ValueError):
            stream.close()


class CameraSupervisor:
    """The cameras of one server. The cameras of its file have their principals and keys
    provisioned by the actor given to :meth:`start` (the server's operator, by default the
    local administrator; it must be an administrator); a camera added over the API, by the
    administrator who added it."""

    def __init__(
        self,
        airside: Airside,
        cameras: list[CameraConfig],
        *,
        path: Path | None = None,
        backoff_s: float = 1.0,
        max_backoff_s: float = 60.0,
        stable_s: float = 60.0,
    ) -> None:
        self.airside = airside
        self.path = path
        self.backoff_s, self.max_backoff_s, self.stable_s = backoff_s, max_backoff_s, stable_s
        self.env = worker_env(airside.settings)
        self._lock = threading.RLock()
        self._runners: dict[str, _Runner] = {c.name: _Runner(self, c, None) for c in cameras}
        self._started = False

    @classmethod
    def from_file(cls, airside: Airside, path: Path, **kw: Any) -> CameraSupervisor:
        return cls(airside, camera_files.load_cameras(path), path=path, **kw)

    def start(self, actor: Principal | None = None) -> None:
        """Start every enabled camera; ``actor`` provisions them (None: the local admin)."""
        with self._lock:
            self._started = True
            for r in self._runners.values():
                if r.actor is None:
                    r.actor = actor
                r.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self._lock:
            runners = list(self._runners.values())
            self._started = False
        threads = [threading.Thread(target=r.stop, args=(timeout,)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def __iter__(self) -> Iterator[_Runner]:
        with self._lock:
            return iter(list(self._runners.values()))

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._runners)

    def runner(self, name: str) -> _Runner:
        with self._lock:
            r = self._runners.get(name)
        if r is None:
            raise NotFoundError(f"no camera named {name!r}", details={"field": "name"})
        return r

    def status(self, name: str) -> dict[str, Any]:
        return self.runner(name).as_dict()

    def statuses(self) -> list[dict[str, Any]]:
        return [r.as_dict() for r in sorted(self, key=lambda r: r.camera.name)]

    # -- changes (the caller authorises and audits them: services.cameras.change)

    def add(self, camera: CameraConfig, actor: Principal) -> tuple[dict[str, Any], bool]:
        """Add and start ``camera`` (``actor`` provisions it); written to the cameras file
        when there is one. Returns its status and whether it was written."""
        if self.path is not None:
            camera = camera.resolved(self.path.resolve().parent)
        with self._lock:
            if camera.name in self._runners:
                raise ConflictError(f"a camera named {camera.name!r} exists",
                                    details={"field": "name"})  # fmt: skip
            if self.path is not None:
                try:
                    camera_files.append_camera(self.path, camera)
                except OSError as e:
                    raise AirsideError(f"cannot write the cameras file: {e.strerror or e}",
                                       code="cameras_file") from None  # fmt: skip
            runner = _Runner(self, camera, actor)
            self._runners[camera.name] = runner
            if self._started:
                runner.start()
        return runner.as_dict(), self.path is not None

    def remove(self, name: str) -> bool:
        """Stop camera ``name`` and forget it (and remove it from the cameras file)."""
        runner = self.runner(name)
        runner.stop()
        with self._lock:
            self._runners.pop(name, None)
            if self.path is None:
                return False
            try:
                return camera_files.remove_camera(self.path, name)
            except OSError as e:
                raise AirsideError(f"cannot write the cameras file: {e.strerror or e}",
                                   code="cameras_file") from None  # fmt: skip

    def replace(self, camera: CameraConfig) -> tuple[dict[str, Any], bool]:
        """Change camera ``camera.name``'s settings: the cameras file is rewritten first (a
        failed write changes nothing), then its worker restarts with them; its counters and
        the principal that provisions it carry over."""
        if self.path is not None:
            camera = camera.resolved(self.path.resolve().parent)
        old = self.runner(camera.name)
        with self._lock:
            if self.path is not None:
                try:
                    camera_files.remove_camera(self.path, camera.name)
                    camera_files.append_camera(self.path, camera)
                except OSError as e:
                    raise AirsideError(f"cannot write the cameras file: {e.strerror or e}",
                                       code="cameras_file") from None  # fmt: skip
        old.stop()
        with self._lock:
            fresh = _Runner(self, camera, old.actor)
            fresh.status.restarts = old.status.restarts
            fresh.status.totals = {k: old.status.counter(k) for k in old.status.totals}
            self._runners[camera.name] = fresh
            if self._started:
                fresh.start()
        return fresh.as_dict(), self.path is not None

    def restart(self, name: str) -> dict[str, Any]:
        """Stop camera ``name``'s worker and start a new one now (a failed camera too)."""
        runner = self.runner(name)
        if not runner.camera.enabled:
            raise ConflictError(f"camera {name!r} is disabled", details={"field": "enabled"})
        runner.stop()
        with self._lock:
            fresh = _Runner(self, runner.camera, runner.actor)
            fresh.status.restarts = runner.status.restarts + 1
            fresh.status.totals = {k: runner.status.counter(k) for k in runner.status.totals}
            self._runners[name] = fresh
            fresh.start()
        return fresh.as_dict()

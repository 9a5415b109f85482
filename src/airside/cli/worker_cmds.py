"""``airside worker --server URL --camera NAME``: one remote camera's pipeline on this
machine, searching and recording through the server (docs/cameras.md). It never opens the
store; its only credential is the camera's API key, from ``AIRSIDE_API_KEY`` or a key file
only its owner may read, never from the command line."""

from __future__ import annotations

import os
import signal
import stat
import threading
from pathlib import Path
from typing import Annotated

import typer

from airside.cli.options import JsonOpt
from airside.cli.render import emit_json, err, esc, fail, out, say
from airside.cli.state import state
from airside.errors import AirsideError


def read_key(key_file: Path | None) -> str:
    """The camera's key: the file's first line (the file 0600, or stricter), else
    ``AIRSIDE_API_KEY``."""
    if key_file is None:
        key = os.environ.get("AIRSIDE_API_KEY", "").strip()
        if not key:
            raise AirsideError("give the camera's API key in AIRSIDE_API_KEY or --key-file",
                               code="missing_key")  # fmt: skip
        return key
    try:
        st = key_file.stat()
        if not stat.S_ISREG(st.st_mode):
            raise AirsideError(f"--key-file {key_file} is not a file", code="bad_key_file")
        if st.st_mode & 0o077:
            raise AirsideError(
                f"--key-file {key_file} may be read by others (mode "
                f"{stat.S_IMODE(st.st_mode):o}): chmod 600 it",
                code="bad_key_file",
            )
        lines = key_file.read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise AirsideError(f"cannot read --key-file {key_file}: {e}", code="bad_key_file") from e
    if not lines or not lines[0].strip():
        raise AirsideError(f"--key-file {key_file} is empty", code="bad_key_file")
    return lines[0].strip()


def register(app: typer.Typer) -> None:
    @app.command("worker")
    def worker_cmd(
        ctx: typer.Context,
        server: Annotated[str, typer.Option(help="The server: https://host:port.")],
        camera: Annotated[
            str, typer.Option(help="The camera (remote = true in the server's cameras.toml).")
        ],
        key_file: Annotated[
            Path | None,
            typer.Option(
                help="File holding the camera's API key (mode 0600); default: AIRSIDE_API_KEY."
            ),
        ] = None,
        ca_file: Annotated[
            Path | None, typer.Option(help="CA certificate(s) to check the server's with.")
        ] = None,
        buffer_events: Annotated[
            int,
            typer.Option(
                min=1,
                help="At most this many events wait for the server on disk "
                "(then the oldest non-safety events are dropped, and reported).",
            ),
        ] = 10_000,
        buffer_mb: Annotated[
            float, typer.Option(min=0.001, help="At most this many megabytes of them.")
        ] = 64.0,
        drain: Annotated[
            float,
            typer.Option(
                min=0,
                help="Seconds to send what waits when the feed ends or the "
                "worker is stopped (the rest goes at its next start).",
            ),
        ] = 10.0,
        as_json: JsonOpt = False,
    ) -> None:
        """Run a remote camera's pipeline here: faces are embedded here and searched by
        the server; events are buffered on disk while the server is out of reach."""
        from airside.server.remote_worker import WorkerOptions, run

        st = state(ctx)
        stop = threading.Event()
        try:
            options = WorkerOptions(
                server=server,
                camera=camera,
                key=read_key(key_file),
                data_dir=st.settings.data_dir,
                ca_file=ca_file,
                buffer_events=buffer_events,
                buffer_bytes=max(1, int(buffer_mb * 1024 * 1024)),
                drain_s=drain,
            )
            previous = {s: signal.signal(s, lambda *_: stop.set())
                        for s in (signal.SIGINT, signal.SIGTERM)}  # fmt: skip
            try:
                summary = run(st.settings, options, stop)
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)
        except (AirsideError, ValueError) as e:
            fail(e, as_json)
        d = summary.as_dict()
        if as_json:
            emit_json(d)
            return
        say(out, f"camera {esc(camera)}: {d['frames_processed']}/{d['frames_read']} frames, "
                 f"{d['identity_events']} identity and {d['safety_events']} safety events, "
                 f"{d['events_sent']} events sent")  # fmt: skip
        if d["identifications_skipped"]:
            say(err, f"  [yellow]{d['identifications_skipped']} face(s) not identified[/]: the "
                     "server was out of reach")  # fmt: skip
        if d["events_dropped"]:
            say(err, f"  [yellow]{d['events_dropped']} event(s) dropped[/]: the buffer was full")
        if d["events_waiting"]:
            say(err, f"  [yellow]{d['events_waiting']} event(s) wait[/] for the next run")

"""The command line's last line of defence: no traceback ever reaches a user.

Every command catches the errors it expects and prints them with their code
(``cli/render.fail``). Anything else (a bug, a damaged database, a full disk) reaches
:class:`GuardedGroup`, which prints one line, ``error (internal_error): ...`` (with
``--json``, ``{"error": "internal_error", ...}`` on stdout), exits 70 (``EX_SOFTWARE``) and
writes the traceback to ``<data dir>/logs/errors.log`` (0600, in a 0700 folder) under an
incident number the message names.

The log holds no personal data: for each exception in the chain, its type and the code
locations it passed through (file, line, function, the source line), never its message
(a database error's message quotes the statement, and could quote what it was writing:
subject references, scores, digests), never local variables, never the command's
arguments (only the command's name).
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import typer
from typer.core import TyperGroup

from airside.cli.render import emit_json, err, esc, fail, say
from airside.errors import AirsideError
from airside.private_files import open_private, private_dir
from airside.store.faults import store_fault

EXIT_INTERNAL = 70  # EX_SOFTWARE (sysexits.h)
LOG_NAME = "logs/errors.log"
_MAX_LOG_BYTES = 4 * 1024 * 1024


class GuardedGroup(TyperGroup):
    """The ``airside`` group: runs the command and answers any unexpected exception with a
    code, logging its traceback (see the module docstring)."""

    def invoke(self, ctx: Any) -> Any:  # Typer's (vendored) click Context
        args = [*ctx._protected_args, *ctx.args]
        as_json = "--json" in args
        command = self._command_path(args)
        previous_hook = threading.excepthook
        threading.excepthook = lambda a: _thread_failed(ctx, command, a)
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.TyperException, EOFError):
            raise  # Typer's own ways out: exit codes, usage errors, Ctrl-D
        except AirsideError as e:
            fail(e, as_json)  # an error with a code that a command did not catch itself
        except OSError as e:
            if e.errno == errno.EPIPE:
                raise  # stdout closed by a pager or `head`: Typer exits quietly
            _fault_or_internal(ctx, command, e, as_json)
        except Exception as e:
            _fault_or_internal(ctx, command, e, as_json)
        finally:
            threading.excepthook = previous_hook

    def _command_path(self, args: list[str]) -> str:
        """The command's name (``audit export``), from this group's own command table:
        never an argument, which could be a subject reference or a path."""
        words: list[str] = []
        group: Any = self
        for a in args:
            commands = getattr(group, "commands", None)
            if not isinstance(commands, dict) or a not in commands:
                break
            words.append(a)
            group = commands[a]
        return " ".join(words) or "airside"


def _fault_or_internal(ctx: Any, command: str, error: BaseException, as_json: bool) -> NoReturn:
    """A fault of the store's surroundings (its server unreachable, a full disk) is an
    error with a code, printed on one line (store/faults.py); anything else is a bug."""
    fault = store_fault(error)
    if fault is not None:
        fail(fault, as_json)
    internal_error(ctx, command, error, as_json)


def internal_error(ctx: Any, command: str, error: BaseException, as_json: bool) -> NoReturn:
    """Log ``error`` and answer it with ``internal_error``; raises ``typer.Exit``."""
    incident = secrets.token_hex(4)
    where = log_incident(_data_dir(ctx), incident, command, error)
    message = (
        f"`airside {command}` stopped on an unexpected {type(error).__name__} (incident {incident})"
    )
    logged = f"; details in {where}" if isinstance(where, Path) else f"; not logged: {where}"
    if as_json:
        emit_json({"error": "internal_error", "message": message, "incident": incident})
    say(err, f"[bold red]error[/] (internal_error): {esc(message + logged)}")
    raise typer.Exit(EXIT_INTERNAL)


def log_incident(
    data_dir: Path | None, incident: str, command: str, error: BaseException
) -> Path | str:
    """Append the incident to the error log; its path, or why it could not be written."""
    if data_dir is None or not data_dir.is_dir():
        return "no data directory"
    path = data_dir / LOG_NAME
    try:
        private_dir(path.parent)
        if path.exists() and path.stat().st_size > _MAX_LOG_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
        with open_private(path, append=True) as f:
            f.write(describe(incident, command, error))
    except OSError as e:
        return e.strerror or type(e).__name__
    return path


def describe(incident: str, command: str, error: BaseException) -> str:
    """The log entry: time, incident, command, then each exception of the chain (outermost
    last, as Python prints them) as its type and frames, without messages or locals."""
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [f"{stamp} incident {incident} in `airside {command}`\n"]
    chain: list[BaseException] = []
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        chain.append(e)
        e = e.__cause__ or (None if e.__suppress_context__ else e.__context__)
    for i, exc in enumerate(reversed(chain)):
        if i:
            lines.append("  which led to\n")
        t = type(exc)
        lines.append(f"  {t.__module__}.{t.__qualname__} (message withheld)\n")
        frames = traceback.extract_tb(exc.__traceback__)
        lines.extend("    " + line for f in frames.format() for line in f.splitlines(True))
    return "".join(lines) + "\n"


def _data_dir(ctx: Any) -> Path | None:
    from airside.cli.state import State

    st = ctx.obj
    if not isinstance(st, State):
        return None
    try:
        return st.settings.data_dir
    except Exception:  # settings that cannot be read: nowhere to log
        return None


def _thread_failed(ctx: Any, command: str, args: threading.ExceptHookArgs) -> None:
    """A background thread (a purge scheduler, a decoder) died: log it like an incident
    and say so in one line, instead of Python's traceback on stderr."""
    if args.exc_value is None or isinstance(args.exc_value, SystemExit):
        return
    incident = secrets.token_hex(4)
    where = log_incident(_data_dir(ctx), incident, command, args.exc_value)
    name = args.thread.name if args.thread is not None else "a thread"
    say(
        err,
        f"[bold yellow]warning[/] (internal_error): background work {esc(name)} stopped on "
        f"an unexpected {esc(type(args.exc_value).__name__)} (incident {incident}; "
        f"{esc(where)})",
    )

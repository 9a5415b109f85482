"""``cameras.toml``: one ``[[camera]]`` table per camera, checked field by field.

    [[camera]]
    name = "gate-12"
    source = "rtsp://cam-12.local/stream"
    galleries = ["boarding-KE123"]
    detect_every = 3

Every refusal (:class:`CameraConfigError`) names the file, the line, the camera and the
field. Relative paths (a file or folder source, ``scene``, ``record``) are relative to the
file's folder. Cameras added or removed over the API are written back as whole
``[[camera]]`` tables, so the rest of the file (comments included) is kept. docs/cameras.md.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from airside.analytics.scene import _Locator as Locator
from airside.analytics.scene import toml_error_where
from airside.errors import AirsideError

#: A camera's name: also its principal (``camera:<name>``) and its Prometheus label.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_HEADER = re.compile(r"^\s*\[")


class CameraConfigError(AirsideError):
    """A cameras file (or a camera given over the API) that cannot be used."""

    code = "bad_camera_config"

    def __init__(
        self,
        problem: str,
        *,
        source: str = "cameras",
        line: int | None = None,
        camera: str | None = None,
        field: str | None = None,
    ) -> None:
        where = f"{source} line {line}" if line is not None else source
        named = f"camera {camera!r}" if camera else ""
        what = f"{named}, {field}" if named and field else named or field or ""
        super().__init__(
            f"{where}: {what + ': ' if what else ''}{problem}",
            details={k: v for k, v in (("line", line), ("camera", camera), ("field", field))
                     if v is not None},
        )  # fmt: skip
        self.line, self.camera, self.field, self.problem = line, camera, field, problem


class CameraConfig(BaseModel):
    """One camera. Strict: a string where a number belongs is refused, not converted."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="Letters, digits, . _ -; unique")
    source: str = Field(min_length=1, description="Video file, stream URL, camera:N, folder")
    galleries: list[str] = Field(default_factory=list, description="Galleries it searches")
    scene: str | None = Field(None, description="Scene file (zones, lines, safety rules)")
    detect_every: int = Field(1, ge=1, le=100, description="Detect on every n-th frame")
    redact: bool = Field(False, description="Blur every unmatched face in the recording")
    enabled: bool = True
    loop: bool = Field(False, description="Play a file or folder source again when it ends")
    fps: float | None = Field(None, gt=0, le=1000, description="Frame rate of a folder")
    purpose: str | None = Field(None, description="Purpose of its searches")
    principal: str | None = Field(None, description="Principal it acts as (camera:<name>)")
    record: str | None = Field(None, description="Folder for annotated recordings")
    remote: bool = Field(False, description="Run by a camera worker on another machine")

    @model_validator(mode="after")
    def _something_to_do(self) -> CameraConfig:
        if not self.galleries and self.scene is None:
            raise ValueError("give galleries to search (identity), a scene (safety), or both")
        if len(set(self.galleries)) != len(self.galleries) or not all(
            g.strip() for g in self.galleries
        ):
            raise ValueError("galleries must be distinct, non-empty names")
        if self.remote and self.record is not None:
            raise ValueError("a remote camera's frames never reach the server: it cannot record")
        return self

    @property
    def principal_name(self) -> str:
        return self.principal or f"camera:{self.name}"

    def is_path_source(self) -> bool:
        """A file or folder on the server (a remote camera's source is its worker's)."""
        return (
            not self.remote
            and "://" not in self.source
            and not self.source.startswith(("camera:", "/dev/video"))
        )

    def resolved(self, base: Path) -> CameraConfig:
        """The same camera with its relative paths made absolute against ``base``."""

        def absolute(p: str | None) -> str | None:
            if p is None:
                return None
            q = Path(p).expanduser()
            return str(q if q.is_absolute() else base / q)

        source = absolute(self.source) if self.is_path_source() else self.source
        return self.model_copy(
            update={"source": source, "scene": absolute(self.scene),
                    "record": absolute(self.record)}
        )  # fmt: skip

    def to_toml(self) -> str:
        """This camera as one ``[[camera]]`` table (fields left at their default omitted)."""
        lines = ["[[camera]]"]
        for key, field in type(self).model_fields.items():
            value = getattr(self, key)
            if key not in ("name", "source", "galleries", "enabled") and value == field.default:
                continue
            if value is None:
                continue
            lines.append(f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are TOML's
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def check_camera(data: dict[str, Any], *, source: str = "camera") -> CameraConfig:
    """One camera from a mapping (an API body): :class:`CameraConfigError` naming the field."""
    try:
        return CameraConfig.model_validate(data)
    except ValidationError as e:
        err = _first(e)
        loc = [str(p) for p in err.get("loc", ())]
        name = data.get("name") if isinstance(data.get("name"), str) else None
        raise CameraConfigError(
            _problem(err), source=source, camera=name, field=loc[0] if loc else None
        ) from None


def _first(e: ValidationError) -> Any:
    """The error to report: an unknown field first (a misspelt one also makes the field it
    meant missing, and the spelling is what needs fixing)."""
    errors = e.errors()
    return next((x for x in errors if x.get("type") == "extra_forbidden"), errors[0])


def _problem(err: Any) -> str:
    msg = str(err.get("msg", "invalid"))
    if err.get("type") == "extra_forbidden":
        return "unknown field"
    if err.get("type") == "missing":
        return "required field is missing"
    return msg.removeprefix("Value error, ")


def parse_cameras(text: str, *, source: str = "cameras.toml") -> list[CameraConfig]:
    """Every camera of a cameras file's ``text`` (relative paths not yet resolved)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        problem, at = toml_error_where(e, text)
        raise CameraConfigError(f"not valid TOML: {problem}", source=source, line=at) from None
    where = Locator(text)
    for key in data:
        if key != "camera":
            raise CameraConfigError(
                "unknown table or key (cameras are [[camera]] tables)",
                source=source, line=where.line((key,)), field=key,
            )  # fmt: skip
    tables = data.get("camera", [])
    if not isinstance(tables, list):
        raise CameraConfigError("cameras are [[camera]] tables", source=source,
                                line=where.line(("camera",)), field="camera")  # fmt: skip
    cameras: list[CameraConfig] = []
    seen: set[str] = set()
    for i, table in enumerate(tables):
        if not isinstance(table, dict):  # camera = [1, "x"]: an array of values, not tables
            raise CameraConfigError("cameras are [[camera]] tables", source=source,
                                    line=where.line(("camera",)), field="camera")  # fmt: skip
        name = table.get("name") if isinstance(table.get("name"), str) else None
        try:
            cam = CameraConfig.model_validate(table)
        except ValidationError as e:
            err = _first(e)
            loc = tuple(err.get("loc", ()))
            field = str(loc[0]) if loc else None
            line = where.line(("camera", i, *loc)) if loc else where.line(("camera", i))
            raise CameraConfigError(
                _problem(err), source=source, line=line, camera=name, field=field
            ) from None
        if cam.name in seen:
            raise CameraConfigError("another camera has this name", source=source,
                                    line=where.line(("camera", i, "name")), camera=cam.name,
                                    field="name")  # fmt: skip
        seen.add(cam.name)
        cameras.append(cam)
    return cameras


def load_cameras(path: Path) -> list[CameraConfig]:
    """The cameras of the file at ``path``, their relative paths resolved against its folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CameraConfigError(f"cannot read the file: {e}", source=str(path)) from None
    base = path.resolve().parent
    return [c.resolved(base) for c in parse_cameras(text, source=str(path))]


def _write_atomically(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_camera(path: Path, camera: CameraConfig) -> None:
    """Add ``camera`` to the file at the end, as its own table (the file is checked again
    with it before it is replaced)."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if text and not text.endswith("\n"):
        text += "\n"
    new = f"{text}\n{camera.to_toml()}" if text else camera.to_toml()
    parse_cameras(new, source=str(path))
    _write_atomically(path, new)


def remove_camera(path: Path, name: str) -> bool:
    """Remove camera ``name``'s ``[[camera]]`` table (its header to the next table) from the
    file; False when the file has no such camera."""
    text = path.read_text(encoding="utf-8")
    cameras = parse_cameras(text, source=str(path))
    index = next((i for i, c in enumerate(cameras) if c.name == name), None)
    if index is None:
        return False
    where = Locator(text)
    start = where.line(("camera", index))
    assert start is not None
    lines = text.splitlines(keepends=True)
    end = next((n for n in range(start, len(lines)) if _HEADER.match(lines[n])), len(lines))
    kept = lines[: start - 1] + lines[end:]
    new = "".join(kept)
    parse_cameras(new, source=str(path))
    _write_atomically(path, new)
    return True

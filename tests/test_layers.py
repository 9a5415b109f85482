"""The layer rule of docs/DESIGN.md holds: no module imports from a layer above its own, and
evaluation never imports the store (import-linter's contracts in pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def lint_imports(config: Path | None = None) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency (pyproject.toml)"
    args = [exe, "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    res = lint_imports()
    assert res.returncode == 0, res.stdout + res.stderr


def test_the_contract_catches_an_upward_import(tmp_path: Path) -> None:
    # The same contracts with the store placed above services: services' imports of the
    # store are then upward, and the check must say so.
    text = (ROOT / "pyproject.toml").read_text()
    broken = text.replace('    "airside.store",\n', "").replace(
        '    "airside.services",\n', '    "airside.store",\n    "airside.services",\n'
    )
    assert broken != text
    config = tmp_path / "pyproject.toml"
    config.write_text(broken)
    res = lint_imports(config)
    assert res.returncode != 0
    assert "airside.services is not allowed to import airside.store" in res.stdout

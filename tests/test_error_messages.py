"""Service errors speak the domain's language: no message below the adapters names a
command-line option or an ``airside`` command (the HTTP API would print it to a browser).
What to do next goes in the error's ``details`` (``field``, ``next``), which each adapter
renders in its own words (``cli/render.cli_hint``)."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from airside.cli.render import cli_hint
from airside.errors import AirsideError

SRC = Path(__file__).resolve().parents[1] / "src" / "airside"
# Everything below the adapters (cli/, demo.py, bench.py) and evaluation's report tools.
CORE = ["services", "governance", "biometrics", "vision", "video", "analytics",
        "model_registry", "store", "errors.py", "config.py", "private_files.py"]  # fmt: skip
CLI_WORDS = re.compile(
    r"(?<![\w-])--[a-z][a-z0-9-]+"  # an option: --basis
    r"|\bairside (?:[a-z]+ )?(?:create|add|verify|rotate|migrate|calibrate|enrol|erase|purge"
    r"|withdraw|grant|revoke|issue|checkpoint|export|rekey|remove|list)\b"  # a command
    r"|\bairside calibrate\b"
)


def string_literals(tree: ast.AST) -> Iterator[ast.Constant]:
    """Every string constant (f-string parts included) that is not a docstring."""
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in docstrings
        ):
            yield node


def cli_words_in(path: Path) -> list[str]:
    found = []
    for node in string_literals(ast.parse(path.read_text(), str(path))):
        for m in CLI_WORDS.finditer(node.value):
            where = path.relative_to(SRC) if path.is_relative_to(SRC) else path.name
            found.append(f"{where}:{node.lineno}: {m.group(0)!r}")
    return found


def core_files() -> list[Path]:
    out: list[Path] = []
    for name in CORE:
        p = SRC / name
        out.extend(sorted(p.rglob("*.py")) if p.is_dir() else [p])
    return out


def test_no_message_below_the_adapters_names_a_cli_option_or_command() -> None:
    found = [hit for path in core_files() for hit in cli_words_in(path)]
    assert found == []


def test_the_check_finds_an_option_and_a_command(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        'def f() -> None:\n    """Docstrings may say --basis."""\n'
        '    raise ValueError("record one with --basis; see `airside gallery create`")\n'
    )
    assert [h.split(": ", 1)[1] for h in cli_words_in(planted)] == [
        "'--basis'", "'airside gallery create'"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("details", "hint"),
    [
        ({"field": "basis"}, "option --basis"),
        ({"fields": ["departs", "retain_until"]}, "option --departs; option --retain-until"),
        ({"next": "gallery.create"}, "see `airside gallery create`"),
        ({"field": "unknown_to_the_cli"}, ""),
    ],
)
def test_the_cli_renders_details_in_its_own_words(details: dict[str, object], hint: str) -> None:
    assert cli_hint(details) == hint


def test_an_error_keeps_its_details() -> None:
    e = AirsideError("no legal basis", code="no_legal_basis", details={"field": "basis"})
    assert (e.code, str(e), e.details) == ("no_legal_basis", "no legal basis", {"field": "basis"})

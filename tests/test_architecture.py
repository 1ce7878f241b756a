"""The parts keep to their layers (pyproject.toml, ``[tool.importlinter]``; drawn in
docs/architecture.md): a part imports only the parts below it, the protocol imports nothing
else of kai, and the SDK only the protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True) == 0

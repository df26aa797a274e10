"""The package layers of docs/architecture.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import os

import pytest

from tests.conftest import ROOT


def test_every_import_linter_contract_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    cli = pytest.importorskip("importlinter.cli", reason="import-linter is a development requirement")
    monkeypatch.chdir(ROOT)
    assert os.path.exists("pyproject.toml")
    assert cli.lint_imports(no_cache=True) == 0, "a layer contract is broken: run lint-imports for the offending imports"

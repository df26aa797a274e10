"""The package layers of docs/architecture.md, checked by import-linter's contracts in pyproject.toml."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

# In a process of its own: import-linter configures logging with dictConfig, which would disable
# the loggers of the modules this test session has already imported.
_LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True))"


def test_every_import_linter_contract_is_kept() -> None:
    pytest.importorskip("importlinter.cli", reason="import-linter is a development requirement")
    result = subprocess.run([sys.executable, "-c", _LINT], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"a layer contract is broken:\n{result.stdout}{result.stderr}"
    assert "Contracts: 2 kept, 0 broken." in result.stdout

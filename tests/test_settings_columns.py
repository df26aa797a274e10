"""Settings that name source columns accept only the source layout's columns, and say which."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from main import cli

CHOICES = "choose from ['InvoiceNo', 'StockCode', 'Description', 'Quantity', 'InvoiceDate', 'UnitPrice', 'CustomerID', 'Country']"


def test_unknown_columns_are_named_with_the_file_and_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("rules:\n  required_fields: [InvoiceNo, Nope]\nquality_rules:\n  new_value_columns: [Land]\n")
    result = CliRunner().invoke(cli, ["config", "validate", str(config)])
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {config}: rules.required_fields: Value error, unknown column(s) ['Nope']; {CHOICES} (got ['InvoiceNo', 'Nope']); "
        f"quality_rules.new_value_columns: Value error, unknown column(s) ['Land']; {CHOICES} (got ['Land'])\n"
    )


def test_known_columns_pass(tmp_path: Path) -> None:
    config = tmp_path / "good.yaml"
    config.write_text("rules:\n  required_fields: [InvoiceNo, StockCode]\nquality_rules:\n  new_value_columns: [Country, StockCode]\n")
    assert CliRunner().invoke(cli, ["config", "validate", str(config)]).exit_code == 0

"""`quality check|checks|report|history` through the CLI on a real SQLite file and a real
PostgreSQL schema: exit codes, JSON, report files, and clear errors for bad arguments."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import Cli, write_csv
from tests.test_cli_etl import ROWS, etl_json, one, q
from tests.test_quality_checks import CLEAN_ROWS


@pytest.fixture
def clean_cli(run_cli: Cli, tmp_path: Path) -> Cli:
    etl_json(run_cli, write_csv(tmp_path / "clean.csv", CLEAN_ROWS))
    return run_cli


def test_check_passes_and_records(clean_cli: Cli, warehouse_url: str) -> None:
    result = clean_cli("quality", "check", "--format", "json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["run_id"] is None
    names = [c["check"] for c in data["checks"]]
    assert len(names) == len(set(names)) == 34  # 35 with data recency switched on
    assert all(re.fullmatch(r"[a-z]+\.[a-z_]+\.[a-z0-9_]+", n) for n in names)
    assert {"validity.fact_sales.invoice_no", "consistency.dim_customers.scd2_overlap", "freshness.etl_runs.last_success"} <= set(names)
    assert data["scores"]["consistency"] == 1.0
    recorded = one(warehouse_url, "SELECT COUNT(*) FROM quality_results WHERE evaluation_id = :e", e=data["evaluation_id"])
    assert recorded == 34
    human = clean_cli("quality", "check")
    assert human.exit_code == 0 and "Quality checks" in human.stdout and "pass" in human.stdout


def test_check_exits_1_on_a_blocking_failure(run_cli: Cli, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "sales.csv", ROWS))  # 2 of 12 rows break business rules: 0.83 < 0.85
    result = run_cli("quality", "check", "--format", "json")
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["blocking_failures"] == ["accuracy.source.business_rules"]
    failing = next(c for c in data["checks"] if c["check"] == "accuracy.source.business_rules")
    assert (failing["offending"], failing["total"], failing["passed"]) == (2, 12, False)
    assert len(failing["samples"]) == 2 and "reasons=" in failing["samples"][0]
    assert "quality check failed: 1 blocking check(s) failed: accuracy.source.business_rules" in result.stderr


def test_check_table_filter_and_unknown_table(clean_cli: Cli) -> None:
    data = json.loads(clean_cli("quality", "check", "--table", "dim_customers", "--format", "json").stdout)
    assert {c["table"] for c in data["checks"]} == {"dim_customers"} and len(data["checks"]) == 4
    bad = clean_cli("quality", "check", "--table", "sales")
    assert bad.exit_code == 1
    assert bad.output.strip() == (
        "Error: unknown table 'sales'; choose from dim_customers, dim_date, dim_products, etl_runs, fact_sales, source"
    )


def test_checks_listing(sqlite_cli: Cli) -> None:
    data = json.loads(sqlite_cli("quality", "checks", "--format", "json").stdout)
    assert len(data) == 34
    invoice = next(c for c in data if c["check"] == "validity.fact_sales.invoice_no")
    assert invoice["threshold"] == 0.9 and invoice["severity"] == "blocking" and "[CA]" in invoice["rule"]


class _Svgs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.titles: list[str] = []
        self._svg = 0
        self._grab = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "svg":
            self._svg += 1
        if tag == "title" and self._svg and len(self.titles) < self._svg:
            self._grab = True
            self.titles.append("")

    def handle_data(self, data: str) -> None:
        if self._grab:
            self.titles[-1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._grab = False


def test_report_formats(run_cli: Cli, tmp_path: Path) -> None:
    etl_json(run_cli, write_csv(tmp_path / "sales.csv", ROWS))
    run_cli("quality", "check")
    text_out = run_cli("quality", "report")
    assert text_out.exit_code == 0, text_out.output
    assert "Scores by dimension" in text_out.stdout and "FAIL [blocking] accuracy.source.business_rules" in text_out.stdout
    assert re.search(r"duplicate\s+1\n", text_out.stdout) and "e.g. quarantine_id=" in text_out.stdout

    md_file = tmp_path / "report.md"
    result = run_cli("quality", "report", "--format", "markdown", "--output", str(md_file))
    assert result.exit_code == 0 and f"markdown report written to {md_file}" in result.stdout
    markdown = md_file.read_text()
    headings = re.findall(r"^## (.+)$", markdown, flags=re.M)
    assert headings[:4] == [
        "Scores by dimension",
        "Failing checks (2)",  # business rules and duplicates; 2010 data is not stale (data recency is off)
        "Quarantine by reason (the whole warehouse)",
        "Trend over the last 1 runs",
    ]
    rows = [line for line in markdown.splitlines() if line.startswith("| `")]
    failing = [r for r in rows if "accuracy.source.business_rules" in r]
    assert failing and "| blocking | 0.8333 |" in failing[0]
    assert any(r.startswith("| `duplicate` | 1 |") for r in rows)

    html_file = tmp_path / "report.html"
    assert run_cli("quality", "report", "--format", "html", "--output", str(html_file)).exit_code == 0
    page = html_file.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<script" not in page and "src=" not in page
    svgs = _Svgs()
    svgs.feed(page)
    assert svgs.titles == ["Quality score trend", "Check score trend", "Rejects by reason", "Rows per run"]
    assert 'data-label="duplicate" data-value="1"' in page


def test_report_errors(clean_cli: Cli, tmp_path: Path) -> None:
    empty = Cli(f"sqlite:///{tmp_path / 'empty.db'}")
    assert empty("setup").exit_code == 0
    none_yet = empty("quality", "report")
    assert none_yet.exit_code == 1 and "Error: no quality results yet; run python main.py quality check" in none_yet.output
    unknown = clean_cli("quality", "report", "--run", "7")
    assert unknown.exit_code == 1 and "Error: run 7 not found; see python main.py runs list" in unknown.output
    run_cli_setup = clean_cli("runs", "list", "--format", "json")
    assert run_cli_setup.exit_code == 0
    clean_cli("etl", "--source", "/nonexistent.csv")  # a failed call records no run and no results
    unchecked = clean_cli("quality", "report", "--run", "99")
    assert unchecked.exit_code == 1 and "Error: run 99 not found" in unchecked.output
    bad_format = clean_cli("quality", "report", "--format", "pdf")
    assert bad_format.exit_code == 2
    assert clean_cli("quality", "check").exit_code == 0
    unwritable = clean_cli("quality", "report", "--output", "/nonexistent/dir/r.txt")
    assert unwritable.exit_code == 1 and "Error: cannot write /nonexistent/dir/r.txt" in unwritable.output
    assert "Traceback" not in none_yet.output + unknown.output + unchecked.output + unwritable.output


def test_history(clean_cli: Cli, warehouse_url: str) -> None:
    for _ in range(3):
        clean_cli("quality", "check")
    clean_cli("quality", "check", "--table", "dim_date")
    rows = json.loads(clean_cli("quality", "history", "--format", "json").stdout)
    assert len(rows) == 4 * 34 + 1  # the last 10 evaluations: the ETL's gate and the four checks
    one_check = json.loads(
        clean_cli("quality", "history", "--check", "consistency.dim_date.date_key", "--last", "2", "--format", "json").stdout
    )
    assert len(one_check) == 2 and {r["check_name"] for r in one_check} == {"consistency.dim_date.date_key"}
    assert one_check[0]["id"] > one_check[1]["id"] and one_check[0]["passed"] is True
    last = json.loads(clean_cli("quality", "history", "--last", "1", "--format", "json").stdout)
    assert [r["check_name"] for r in last] == ["consistency.dim_date.date_key"]
    unknown = clean_cli("quality", "history", "--check", "validity.nope")
    assert unknown.exit_code == 1 and "Error: unknown check 'validity.nope'; see python main.py quality checks" in unknown.output
    assert clean_cli("quality", "history", "--last", "0").exit_code == 2
    assert q(warehouse_url, "SELECT COUNT(DISTINCT evaluation_id) FROM quality_results") == [(5,)]  # the ETL's gate too

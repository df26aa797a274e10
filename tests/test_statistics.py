"""Planner statistics of the partitioned fact table: re-analyzed after a load that moved the row
count by a tenth or more, not after every small load (an ANALYZE samples every partition)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from sampledata.generator import generate_sales
from tests.conftest import PG_URL, Cli, write_csv
from tests.test_cli_etl import etl_json, q

_PARENT_ROWS = "SELECT reltuples FROM pg_class WHERE oid = CAST('fact_sales' AS regclass)"
_ONE_MORE = [["581590", "23145", "ZINC T-LIGHT HOLDER", "3", "2011-12-09 12:00:00", "1.25", "12680", "France"]]


def test_small_loads_do_not_reanalyze_a_large_fact_table(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url)
    first = etl_json(cli, generate_sales(tmp_path / "big.csv", 3_000, seed=5).path)
    assert "analyze" in first["timings"]
    analyzed = q(pg_url, _PARENT_ROWS)[0][0]
    assert analyzed == first["rows_loaded"]  # the first load is analyzed (the parent had no statistics)
    small = etl_json(cli, write_csv(tmp_path / "one.csv", _ONE_MORE))
    assert small["rows_loaded"] == 1
    assert q(pg_url, _PARENT_ROWS)[0][0] == analyzed  # 1 row in ~3,000: not worth an ANALYZE


def test_a_load_that_grows_the_table_by_a_tenth_is_analyzed(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url)
    etl_json(cli, generate_sales(tmp_path / "a.csv", 1_000, seed=5).path)
    before = q(pg_url, _PARENT_ROWS)[0][0]
    grown = etl_json(cli, generate_sales(tmp_path / "b.csv", 1_000, seed=6).path)
    assert q(pg_url, _PARENT_ROWS)[0][0] == before + grown["rows_loaded"]


def test_a_run_the_gate_rolls_back_leaves_the_statistics_as_they_were(pg_url: str, tmp_path: Path) -> None:
    cli = Cli(pg_url)
    etl_json(cli, generate_sales(tmp_path / "a.csv", 1_000, seed=5).path)
    before = q(pg_url, _PARENT_ROWS)[0][0]
    # ANALYZE writes the row count (pg_class.reltuples) in place, which no rollback undoes: it must
    # run only once the load has committed (measured: inside the transaction it left 1,956 here).
    strict = {"RDP_QUALITY_RULES__ON_FAILURE": "fail", "RDP_QUALITY_RULES__ACCURACY": "0.9999"}
    failed = cli("etl", "--source", str(generate_sales(tmp_path / "b.csv", 1_000, seed=6).path), env=strict)
    assert failed.exit_code == 1 and "quality gate failed" in failed.output
    assert q(pg_url, _PARENT_ROWS)[0][0] == before


def test_statistics_that_cannot_be_taken_after_the_commit_do_not_fail_the_run(pg_url: str, tmp_path: Path) -> None:
    """The load has committed when ANALYZE runs: a lock it cannot get (here another session's
    ANALYZE-class lock on one aggregate, with a short lock_timeout) is reported, the run succeeds."""
    cli = Cli(pg_url)
    etl_json(cli, write_csv(tmp_path / "one.csv", _ONE_MORE))  # creates the tables
    schema = make_url(pg_url).query["options"].split("=", 1)[1]
    impatient = make_url(pg_url).update_query_dict({"options": f"-csearch_path={schema} -clock_timeout=300"})
    holder = create_engine(make_url(PG_URL).set(drivername="postgresql+psycopg2"))
    with holder.connect() as conn:
        conn.execute(text(f"LOCK TABLE {schema}.agg_daily_product IN SHARE UPDATE EXCLUSIVE MODE"))
        loaded = etl_json(Cli(impatient.render_as_string(hide_password=False)), generate_sales(tmp_path / "g.csv", 1_000, seed=5).path)
        conn.rollback()
    holder.dispose()
    assert loaded["status"] == "success" and loaded["rows_loaded"] > 900
    assert "planner statistics were not refreshed" in loaded["message"] and "lock timeout" in loaded["message"]
    assert q(pg_url, "SELECT status FROM etl_runs ORDER BY run_id") == [("success",), ("success",)]
    assert q(pg_url, "SELECT COUNT(*) FROM fact_sales")[0][0] == loaded["rows_loaded"] + 1


def test_the_fact_is_analyzed_at_its_own_statistics_target(pg_url: str, tmp_path: Path) -> None:
    """The post-load ANALYZE of the fact samples FACT_STATISTICS_TARGET (histograms of that many
    buckets); a column's own target still wins, and the session's target is restored after it."""
    from database.partitions import FACT_STATISTICS_TARGET, analyze_fact

    cli = Cli(pg_url)
    etl_json(cli, generate_sales(tmp_path / "a.csv", 3_000, seed=5).path)
    bounds = "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats WHERE schemaname = current_schema() AND tablename = 'fact_sales' AND attname = :c AND inherited"
    assert 2 < q(pg_url, bounds, c="source_row")[0][0] <= FACT_STATISTICS_TARGET + 1
    engine = create_engine(make_url(pg_url).set(drivername="postgresql+psycopg2"))
    with engine.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        conn.execute(text("ALTER TABLE fact_sales ALTER COLUMN source_row SET STATISTICS 200"))
        analyze_fact(conn)
        assert conn.execute(text("SHOW default_statistics_target")).scalar_one() == "100"
    engine.dispose()
    assert q(pg_url, bounds, c="source_row")[0][0] > FACT_STATISTICS_TARGET + 1

"""A newcomer's first hour (issue #22): mistakes a new user makes get one `Error:` line and exit 1,
a command that only reads creates nothing on disk, and a run leaves no lock file behind."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from config.settings import DatabaseSettings
from database.engine import make_engine
from database.locks import warehouse_lock
from tests.conftest import ROOT, Cli, write_csv
from tests.test_cli_etl import ROWS
from utils.vocabulary import SOURCE_COLUMNS

SAMPLE = str(ROOT / "data" / "sample_sales.csv")


def _only_error_line(output: str) -> str:
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, output
    return errors[0]


def _tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("command", [("etl", "--source", SAMPLE), ("report", "sales"), ("setup",), ("query", "SELECT 1")])
def test_warehouse_under_a_file_is_one_error_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    (tmp_path / "afile").write_text("not a folder\n")
    db = tmp_path / "afile" / "x.db"
    result = Cli(f"sqlite:///{db}")(*command)
    assert result.exit_code == 1, result.output
    line = _only_error_line(result.output)
    assert str(db) in line and f"{tmp_path / 'afile'} is a file, not a folder" in line


def test_etl_into_a_missing_folder_says_how_to_create_it_and_creates_nothing(tmp_path: Path) -> None:
    folder = tmp_path / "typo" / "dir"
    result = Cli(f"sqlite:///{folder / 'x.db'}")("etl", "--source", SAMPLE)
    assert result.exit_code == 1, result.output
    line = _only_error_line(result.output)
    assert f"the folder {folder} does not exist; create it first (mkdir -p {folder})" in line
    assert _tree(tmp_path) == ["logs", "logs/rdp.log"]  # the test's own log file only


@pytest.mark.parametrize(
    "command",
    [("report", "sales"), ("query", "SELECT 1"), ("quality", "report"), ("quality", "history"), ("quarantine", "list"),
     ("alerts", "list"), ("runs", "list"), ("versions", "list"), ("test",)],
)  # fmt: skip
@pytest.mark.parametrize("where", ["zz/y.db", "y.db"])
def test_read_only_commands_create_nothing(tmp_path: Path, command: tuple[str, ...], where: str) -> None:
    work = tmp_path / "work"
    work.mkdir()
    result = Cli(f"sqlite:///{work / where}")(*command)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert _tree(work) == [], f"{command} created {_tree(work)}"


def test_missing_warehouse_file_is_said_so(tmp_path: Path) -> None:
    result = Cli(f"sqlite:///{tmp_path / 'zz' / 'y.db'}")("report", "sales")
    assert "does not exist" in _only_error_line(result.output)


def test_etl_leaves_no_lock_file(tmp_path: Path) -> None:
    folder = tmp_path / "wh"
    folder.mkdir()
    cli = Cli(f"sqlite:///{folder / 'warehouse.db'}")
    assert cli("etl", "--source", SAMPLE).exit_code == 0
    assert cli("versions", "list").exit_code == 0
    assert [p.name for p in folder.iterdir() if p.name.endswith(".lock")] == []


def test_lock_stays_exclusive_although_its_file_is_deleted(tmp_path: Path) -> None:
    """A waiter that wins the lock of a file the holder deleted must lock the new file instead:
    it may not run while a third process holds the new one."""
    engine = make_engine(DatabaseSettings(url=f"sqlite:///{tmp_path / 'w.db'}"))
    events: list[tuple[str, float]] = []
    first = warehouse_lock(engine, 5)
    first.__enter__()

    def waiter() -> None:
        with warehouse_lock(engine, 10):
            events.append(("waiter in", time.monotonic()))

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.6)  # the waiter has opened the lock file and polls it
    first.__exit__(None, None, None)
    with warehouse_lock(engine, 5):  # the lock file is new: this one gets it at once
        events.append(("third in", time.monotonic()))
        time.sleep(1.0)
        events.append(("third out", time.monotonic()))
    thread.join(15)
    engine.dispose()
    order = [name for name, _ in sorted(events, key=lambda e: e[1])]
    assert order in (["third in", "third out", "waiter in"], ["waiter in", "third in", "third out"]), events
    assert list(tmp_path.glob("*.lock")) == []


@pytest.fixture
def loaded(tmp_path: Path) -> Cli:
    cli = Cli(f"sqlite:///{tmp_path / 'warehouse.db'}")
    result = cli("etl", "--source", str(write_csv(tmp_path / "sales.csv", ROWS)))
    assert result.exit_code == 0, result.output
    return cli


def test_a_misspelt_statement_is_a_syntax_error_not_a_write(loaded: Cli) -> None:
    result = loaded("query", "SELEC 1")
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        "Error: query failed: syntax error: SELEC does not begin an SQL statement (did you mean SELECT?); "
        "`query` runs one read-only statement (SELECT, WITH, VALUES, TABLE or EXPLAIN)"
    )
    assert "change the warehouse" in loaded("query", "DELETE FROM fact_sales").stderr  # a real write is still refused as one


@pytest.mark.parametrize(("delimiter", "said"), [(";", "';', not by ','; pass --delimiter ';'"),
    ("\t", "tabs, not by ','; pass --delimiter $'\\t'"), ("|", "'|', not by ','; pass --delimiter '|'")])  # fmt: skip
def test_another_delimiter_in_the_header_is_named_with_the_option(tmp_path: Path, delimiter: str, said: str) -> None:
    source = tmp_path / "extract.csv"
    lines = [
        delimiter.join(SOURCE_COLUMNS),
        delimiter.join(["536365", "85123A", "MUG", "6", "2010-12-01 08:26:00", "2.55", "17850", "France"]),
    ]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = Cli(f"sqlite:///{tmp_path / 'w.db'}")("etl", "--source", str(source))
    assert result.exit_code == 1
    line = _only_error_line(result.output)
    assert line.startswith(f"Error: {source}: the header line is separated by ") and said in line, line
    assert line.endswith("(or set etl.delimiter in the config)")


def test_a_header_that_is_wrong_anyway_keeps_its_message(tmp_path: Path) -> None:
    source = tmp_path / "extract.csv"
    source.write_text("a;b;c\n1;2;3\n", encoding="utf-8")
    line = _only_error_line(Cli(f"sqlite:///{tmp_path / 'w.db'}")("etl", "--source", str(source)).output)
    assert "not found in the header line; found: a;b;c." in line


def test_quality_report_json_and_its_default_follows_the_latest_evaluation(loaded: Cli) -> None:
    after_run = json.loads(loaded("quality", "report", "--format", "json").stdout)
    assert (after_run["basis"], after_run["run_id"], after_run["subject"]) == ("latest run", 1, "run 1, the latest ETL run")
    assert after_run["checks"] and set(after_run["scores"]) <= set(after_run["dimensions"])
    assert loaded("quality", "check").exit_code in (0, 1)  # 1: a blocking check failed on these rows
    after_check = loaded("quality", "report", "--format", "json")
    assert after_check.exit_code == 0, after_check.output
    data = json.loads(after_check.stdout)
    assert (data["basis"], data["run_id"], data["scope"]) == ("latest check", None, "the whole warehouse")
    text = loaded("quality", "report").stdout
    assert text.startswith("Data quality report: the latest quality check, of the whole warehouse (sqlite)")
    assert "the latest quality check or the latest ETL run" in text
    assert json.loads(loaded("quality", "report", "--run", "1", "--format", "json").stdout)["subject"] == "run 1"


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_reports_to_share_follow_the_umask(loaded: Cli, tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        for args, path in [(("report", "dashboard", "--output"), tmp_path / "d.html"),
                           (("quality", "report", "--format", "html", "--output"), tmp_path / "q.html")]:  # fmt: skip
            result = loaded(*args, str(path))
            assert result.exit_code == 0, result.output
            assert stat.S_IMODE(path.stat().st_mode) == mode, path
    finally:
        os.umask(old)


COMMITTED_DOCS = ("lineage.md", "quality.md", "schema.md", "data_dictionary.md")


def test_docs_generate_writes_to_its_own_ignored_folder_by_default() -> None:
    from main import cli
    from metadata.docs import DEFAULT_DIR

    option = next(p for p in cli.commands["docs"].commands["generate"].params if p.name == "output_dir")
    assert not isinstance(option.default, (str, Path)) and DEFAULT_DIR == ROOT / "docs" / "generated"  # none given: docs/generated
    ignored = subprocess.run(["git", "check-ignore", "-q", "docs/generated/lineage.md"], cwd=ROOT)
    assert ignored.returncode == 0, "docs/generated/ must be ignored by git"
    tracked = subprocess.run(["git", "ls-files", "docs/generated"], cwd=ROOT, capture_output=True, text=True).stdout
    assert tracked == ""


def test_committed_docs_hold_no_machine_paths() -> None:
    for name in COMMITTED_DOCS:
        text = (ROOT / "docs" / name).read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.])/(work|home|root|tmp|Users|var)/", text), name
        assert str(ROOT) not in text, name


def test_generated_lineage_shows_a_project_source_by_its_project_path(tmp_path: Path) -> None:
    cli = Cli(f"sqlite:///{tmp_path / 'w.db'}")
    assert cli("etl", "--source", SAMPLE).exit_code == 0
    assert cli("docs", "generate", "--output-dir", str(tmp_path / "docs")).exit_code == 0
    lineage = (tmp_path / "docs" / "lineage.md").read_text(encoding="utf-8")
    assert 'src1["data/sample_sales.csv<br/>' in lineage and str(ROOT) not in lineage
    assert lineage == (ROOT / "docs" / "lineage.md").read_text(encoding="utf-8")  # the committed example is this page


def test_requirements_are_split_into_runtime_dask_and_dev() -> None:
    def names(file: str) -> set[str]:
        lines = (ROOT / file).read_text(encoding="utf-8").splitlines()
        return {re.split(r"[\[<>=~ ]", line, maxsplit=1)[0].lower() for line in lines if line.strip() and not line.startswith("#")}

    runtime, dask, dev = names("requirements.txt"), names("requirements-dask.txt"), names("requirements-dev.txt")
    assert not runtime & {"pytest", "hypothesis", "selenium", "ruff", "import-linter", "duckdb", "dask"}
    assert {"click", "sqlalchemy", "pandas"} <= runtime
    assert dask == {"-r", "dask"}
    assert {"pytest", "hypothesis", "selenium", "ruff", "import-linter", "duckdb", "-r"} <= dev
    dev_text = (ROOT / "requirements-dev.txt").read_text()
    assert "-r requirements.txt" in dev_text and "-r requirements-dask.txt" in dev_text
    assert "pip install --quiet -r requirements-dev.txt" in (ROOT / ".ci" / "run").read_text()


def test_dask_engine_without_dask_says_how_to_install_it(tmp_path: Path) -> None:
    """A Python where dask cannot be imported (as after pip install -r requirements.txt alone)."""
    code = "import sys; sys.modules['dask'] = None; sys.modules['distributed'] = None; from main import cli; cli()"
    args = ["--database-url", f"sqlite:///{tmp_path / 'w.db'}", "etl", "--source", SAMPLE, "--engine", "dask"]
    env = {**os.environ, "RDP_LOGGING__FILE": str(tmp_path / "rdp.log")}
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: the Dask engine needs Dask, which is not installed (dask is missing); "
        "install it with pip install -r requirements-dask.txt, or use --engine pandas"
    )
    assert not (tmp_path / "w.db").exists()


def _browser_step() -> str:
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    start = script.index('echo "== browser')
    return script[start : script.index("export RDP_TEST_POSTGRES_URL", start)]


@pytest.mark.parametrize("update_first", [False, True])
def test_ci_installs_the_driver_when_only_the_browser_is_there(tmp_path: Path, update_first: bool) -> None:
    """.ci/run's browser step on a machine with chromium but no chromedriver: it installs the
    driver alone (after apt-get update when the first install fails). apt-get is a stand-in
    that logs its calls and 'installs' the driver at RDP_CHROMEDRIVER."""
    bin_dir, driver, calls = tmp_path / "bin", tmp_path / "chromedriver", tmp_path / "apt.log"
    bin_dir.mkdir()
    (bin_dir / "chromium").write_text("#!/bin/sh\necho Chromium 1.0\n")
    fail = f'[ "$1" = install ] && [ ! -e {tmp_path}/updated ] && [ "{int(update_first)}" = 1 ] && exit 100\n'
    (bin_dir / "apt-get").write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = update ] && touch {tmp_path}/updated && exit 0\n{fail}'
        f'printf "#!/bin/sh\\necho ChromeDriver 1.0\\n" > {driver} && chmod +x {driver}\n'
    )
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "RDP_CHROMEDRIVER": str(driver)}
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", _browser_step()], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    expected = (
        ["install -y -q chromium-driver"]
        if not update_first
        else ["install -y -q chromium-driver", "update -q", "install -y -q chromium-driver"]
    )
    assert calls.read_text().splitlines() == expected
    assert "ChromeDriver 1.0" in result.stdout and "Chromium 1.0" in result.stdout

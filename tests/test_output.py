"""Output that reads well at any width and keeps up with the query (issue #22 items 6-8, #21)."""

from __future__ import annotations

import io
import re
from decimal import Decimal

from rich.console import Console

from utils.progress import ProgressBar
from utils.render import show, table, values_grid


def _render(renderable, width: int) -> str:
    out = io.StringIO()
    Console(file=out, width=width, soft_wrap=False, color_system=None).print(renderable)
    return out.getvalue()


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w:.,()-]+", text))


HISTORY = [
    {"id": n, "job": "nightly-load", "trigger": "schedule", "status": "quarantined", "try": 1, "started (UTC)": "2026-12-08 02:00:01",
     "seconds": "12", "files": 3, "etl runs": "41, 42, 43", "message": "loaded 3 files; 12 rows quarantined for non-positive prices"}
    for n in range(1, 4)
]  # fmt: skip


def test_a_table_at_80_columns_cuts_no_word_in_two_and_says_what_it_left_out():
    text = _render(table(HISTORY, title="Job history"), 80)
    assert max(map(len, text.splitlines())) <= 80
    words = _words(text)
    for word in ("trigger", "quarantined", "2026-12-08", "02:00:01", "nightly-load"):
        assert word in words, word
    assert "not shown at this width:" in text  # fewer columns rather than cut words


def test_a_wide_terminal_shows_every_column():
    text = _render(table(HISTORY, title="Job history"), 200)
    assert "not shown" not in text and "message" in text and "non-positive prices" in text


def test_query_numbers_are_right_aligned_with_separators_and_one_number_of_decimals():
    grid = values_grid(["year", "customer", "revenue", "units"], [(2011, "a", Decimal("6174.5"), 1234), (2011, "b", Decimal("12.25"), 5)])
    text = _render(grid, 80)
    assert "6,174.50" in text and "12.25" in text and "1,234" in text
    assert "2,011" not in text and "2011" in text  # a year is not a quantity
    lines = [line for line in text.splitlines() if "6,174.50" in line or "12.25" in line]
    assert lines[0].index("6,174.50") + len("6,174.50") == lines[1].index("12.25") + len("12.25")  # right edges line up


def test_one_row_is_one_row(tmp_path):
    import click
    from click.testing import CliRunner

    from performance.commands import _print_result
    from performance.service import QueryResult

    result = QueryResult(["one"], [(1,)], "miss", 1.0, "1.1.1.1")

    @click.command()
    def cmd():
        _print_result(result, "table")

    out = CliRunner().invoke(cmd)
    assert "1 row in" in out.output and "1 rows" not in out.output


def test_thousands_of_rows_print_plainly_with_a_note():
    rows = [(i, f"customer {i}", Decimal(i) / 4) for i in range(4371)]
    out = io.StringIO()
    show(values_grid(["customer_id", "name", "monetary"], rows, "customer_rfm"), out)
    text = out.getvalue()
    assert "note: 4,371 rows, shown plain" in text
    assert text.count("\n") > 4371


def test_the_grid_drops_columns_only_when_their_words_do_not_fit():
    assert table([{"a": "x"}]).fit(80) == [0]
    wide = table([{"a": "word " * 30, "b": "2026-12-08"}])
    assert wide.fit(40) == [0, 1]  # text folds at spaces: both fit


def test_the_progress_bar_never_passes_its_total_and_names_each_phase():
    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=True, color_system=None)
    with ProgressBar(541_437, console=console) as progress:
        progress(500_000)
        progress(541_909)  # the estimate was low
        console.log("an alert warning")  # a log line prints above the bar, not through it
        progress.phase("quality gate")
        assert progress.total == 541_909
        console.print("x")
        text = out.getvalue()
    counts = [(int(a.replace(",", "")), int(b.replace(",", ""))) for a, b in re.findall(r"([\d,]+)/([\d,]+) rows", text)]
    assert counts and all(done <= total for done, total in counts)
    assert "quality gate" in text
    assert "an alert warning" in text

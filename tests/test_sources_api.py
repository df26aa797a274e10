"""HTTP API sources against a real HTTP server on 127.0.0.1: pagination, retries, tokens, errors."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import etl.api_source as api
from config.settings import Settings
from etl.sources import SourceOptions, open_source
from tests.conftest import Cli
from tests.test_cli_etl import ROWS, one, q
from utils.errors import SourceError
from utils.urls import mask_url

FIELDS = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country"]


def records_of(rows: list[list[str]], typed: bool = True) -> list[dict]:
    """Text rows as JSON records: numbers as JSON numbers, empty values as null (as APIs send them)."""
    out = []
    for row in rows:
        rec: dict[str, object] = dict(zip(FIELDS, row, strict=True))
        if typed:
            for key, cast in (("Quantity", int), ("UnitPrice", float)):
                with contextlib.suppress(ValueError):  # "not a date"-style values stay text
                    rec[key] = cast(rec[key])
            rec["CustomerID"] = int(float(rec["CustomerID"])) if rec["CustomerID"] else None
        out.append(rec)
    return out


class SalesApi:
    """Serves `records` in pages of `page_size` on /sales, paginated in one of four styles:
    next: {"records": [...], "next": "/sales?page=N"} · page: a bare list per ?page=N, [] past the end ·
    offset: {"data": [...]} per ?offset=K&limit=L · link: {"items": [...]} with a Link header (cursor tokens).
    Pages listed in `fail_once` answer 503 the first time; pages in `slow_once` stall the first time."""

    def __init__(self, records: list, page_size: int = 4, style: str = "next", token: str | None = None) -> None:
        self.records, self.page_size, self.style, self.token = records, page_size, style, token
        self.fail_once: set[int] = set()
        self.slow_once: dict[int, float] = {}
        self.hits: Counter[int] = Counter()
        self.auth: list[str | None] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def url(self, path: str = "/sales") -> str:
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _page(self, query: dict[str, list[str]]) -> tuple[int, list]:
        size = int(query.get("limit", [self.page_size])[0])
        if self.style == "offset":
            start = int(query.get("offset", ["0"])[0])
            return start // size + 1, self.records[start : start + size]
        key = "cursor" if self.style == "link" else "page"
        number = int(query.get(key, ["1"])[0].removeprefix("c"))
        return number, self.records[(number - 1) * size : number * size]

    def _body(self, number: int, records: list) -> tuple[object, dict[str, str]]:
        more = number * self.page_size < len(self.records)
        if self.style == "next":
            return {"records": records, "next": f"/sales?page={number + 1}" if more else None, "count": len(self.records)}, {}
        if self.style == "link":
            link = f'<{self.base}/sales?cursor=c{number + 1}>; rel="next"' if more else f'<{self.base}/sales>; rel="first"'
            return {"items": records}, {"Link": link}
        if self.style == "offset":
            return {"data": records}, {}
        return records, {}

    def _handler(self):
        api_server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep the test output clean
                pass

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                api_server.auth.append(self.headers.get("Authorization"))
                if parts.path != "/sales":
                    return self._send(404, {"error": f"no such resource: {parts.path}"})
                if api_server.token and self.headers.get("Authorization") != f"Bearer {api_server.token}":
                    return self._send(401, {"error": "missing or wrong bearer token"})
                number, records = api_server._page(parse_qs(parts.query))
                with api_server.lock:
                    api_server.hits[number] += 1
                    first = api_server.hits[number] == 1
                if first and number in api_server.fail_once:
                    return self._send(503, {"error": "try again"})
                if first and number in api_server.slow_once:
                    time.sleep(api_server.slow_once[number])
                body, headers = api_server._body(number, records)
                self._send(200, body, headers)

            def _send(self, status: int, body: object, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for name, value in (headers or {}).items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up on a stalled page (timeout test)

        return Handler


@pytest.fixture
def serve() -> Iterator:
    servers: list[SalesApi] = []

    def start(records: list, **kwargs) -> SalesApi:
        servers.append(SalesApi(records, **kwargs))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "BACKOFF_S", 0.05)


def test_paged_api_with_retry_and_token(run_cli: Cli, warehouse_url: str, serve, monkeypatch: pytest.MonkeyPatch) -> None:
    server = serve(records_of(ROWS), page_size=4, token="tok-123")
    server.fail_once = {2}
    result_env = {"SHOP_TOKEN": "tok-123"}
    out = run_cli("etl", "--source", server.url(), "--token-env", "SHOP_TOKEN", "--format", "json", env=result_env)
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert (summary["rows_read"], summary["rows_loaded"], summary["rows_quarantined"]) == (12, 8, 4)
    assert summary["quarantine_by_reason"] == {"bad_invoice_date": 1, "duplicate": 1, "non_positive_price": 1, "zero_quantity": 1}
    assert summary["source"] == server.url()
    assert server.hits == {1: 1, 2: 2, 3: 1}  # page 2 failed with 503 once and was fetched again
    assert set(server.auth) == {"Bearer tok-123"}
    assert "tok-123" not in out.output
    # Records numbered across pages, 1 = first record of the first page.
    assert dict(q(warehouse_url, "SELECT source_row, reasons FROM etl_quarantine")) == {
        3: "duplicate",
        6: "zero_quantity",
        7: "non_positive_price",
        12: "bad_invoice_date",
    }
    assert one(warehouse_url, "SELECT source FROM etl_runs") == server.url()
    again = run_cli("etl", "--source", server.url(), "--token-env", "SHOP_TOKEN", "--format", "json", env=result_env)
    assert json.loads(again.stdout)["rows_already_loaded"] == 12


def test_not_found_is_a_clear_error(sqlite_cli: Cli, serve) -> None:
    server = serve(records_of(ROWS))
    result = sqlite_cli("etl", "--source", server.url("/sale"))
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: HTTP 404 Not Found from {server.url('/sale')}: no such resource: /sale"


def test_unauthorised_and_missing_token(sqlite_cli: Cli, serve) -> None:
    server = serve(records_of(ROWS), token="right")
    result = sqlite_cli("etl", "--source", server.url(), "--token-env", "SHOP_TOKEN", env={"SHOP_TOKEN": "wrong-secret"})
    assert result.exit_code == 1
    assert result.stderr.strip() == (
        f"Error: HTTP 401 Unauthorized from {server.url()}: missing or wrong bearer token (check the token in $SHOP_TOKEN)"
    )
    assert "wrong-secret" not in result.output
    missing = sqlite_cli("etl", "--source", server.url(), "--token-env", "NO_SUCH_VAR_RDP", env={"NO_SUCH_VAR_RDP": None})
    assert missing.exit_code == 1
    assert missing.stderr.strip() == (
        "Error: --token-env NO_SUCH_VAR_RDP: the environment variable NO_SUCH_VAR_RDP is not set; export it with the API's bearer token"
    )


@pytest.mark.parametrize("style", ["page", "offset", "link"])
def test_pagination_styles(style: str, serve) -> None:
    records = records_of(ROWS)
    server = serve(records, page_size=5, style=style)
    url = server.url("/sales?offset=0&limit=5") if style == "offset" else server.url()
    chunks = list(open_source(url, Settings()).chunks(100))
    assert [c.rows_read for c in chunks] == [12]
    assert chunks[0].frame["InvoiceNo"].tolist() == [r["InvoiceNo"] for r in records]
    assert chunks[0].frame["CustomerID"].tolist()[3] == ""  # null -> empty
    assert chunks[0].frame["UnitPrice"].tolist()[:2] == ["2.55", "3.39"]
    # Links end when there is no next one; numbers end on an empty page (offset 12 is page 3 again here).
    assert sum(server.hits.values()) == {"page": 4, "offset": 4, "link": 3}[style]


def test_chunks_span_pages_and_bad_records(serve) -> None:
    records = [*records_of(ROWS), "not an object", *records_of(ROWS[:2])]
    server = serve(records, page_size=4)
    chunks = list(open_source(server.url(), Settings()).chunks(5))
    assert [c.rows_read for c in chunks] == [5, 5, 5]
    assert chunks[2].malformed == [(13, '"not an object"', "record is not a JSON object")]
    assert chunks[2].source_rows.tolist() == [11, 12, 14, 15]


def test_api_that_ignores_the_page_parameter(serve) -> None:
    server = serve(records_of(ROWS), page_size=100, style="page")
    server._page = lambda query: (1, server.records)  # the same list whatever the page
    chunks = list(open_source(server.url(), Settings()).chunks(100))
    assert [c.rows_read for c in chunks] == [12]


def test_timeout_is_retried(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "READ_TIMEOUT_S", 0.3)
    server = serve(records_of(ROWS), page_size=6)
    server.slow_once = {2: 1.0}
    chunks = list(open_source(server.url(), Settings()).chunks(100))
    assert [c.rows_read for c in chunks] == [12]
    assert server.hits[2] == 2


def test_persistent_503(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "RETRIES", 2)
    server = serve(records_of(ROWS))
    original = server._page

    def always_first(query):
        number, records = original(query)
        server.fail_once.add(number)
        server.hits[number] = 0  # every request looks like the first one: 503 again
        return number, records

    server._page = always_first
    with pytest.raises(SourceError) as err:
        open_source(server.url(), Settings())
    assert str(err.value) == f"HTTP 503 Service Unavailable from {server.url()}: try again (still failing after 2 retries; try again later)"


def test_response_problems(serve, tmp_path: Path) -> None:
    empty = serve([])
    with pytest.raises(SourceError) as err:
        open_source(empty.url(), Settings())
    assert str(err.value) == f"{empty.url()}: the API returned no records; check the URL and its parameters"
    wrong = serve([{"order": 1, "sku": "A"} | {k: v for k, v in records_of(ROWS[:1])[0].items() if k not in ("InvoiceNo", "StockCode")}])
    with pytest.raises(SourceError) as err:
        open_source(wrong.url(), Settings())
    assert str(err.value).startswith(
        f"{wrong.url()}: required column(s) InvoiceNo, StockCode not found"
    ) and "found: order, sku, Description" in str(err.value)
    mapped = open_source(wrong.url(), Settings(), SourceOptions(column_map={"InvoiceNo": "order", "StockCode": "sku"}))
    assert next(iter(mapped.chunks(10))).frame["InvoiceNo"].tolist() == ["1"]


def test_secrets_in_the_url_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "RETRIES", 1)
    assert mask_url("https://u:pw@shop.example/api?key=abc&page=2&token=xyz") == "https://u:***@shop.example/api?key=***&page=2&token=***"
    with pytest.raises(SourceError) as err:
        open_source("http://u:pw@127.0.0.1:1/sales?api_key=s3", Settings())
    assert str(err.value).startswith("http://u:***@127.0.0.1:1/sales?api_key=***: no answer after 1 retries (")
    assert "s3" not in str(err.value) and ":pw@" not in str(err.value)


def test_timeouts_give_up_after_the_retries(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api, "RETRIES", 1)
    monkeypatch.setattr(api, "READ_TIMEOUT_S", 0.2)
    server = serve(records_of(ROWS))
    original = server._page

    def always_slow(query):
        number, records = original(query)
        server.slow_once[number] = 0.6
        server.hits[number] = 0  # every request looks like the first one: stalls again
        return number, records

    server._page = always_slow
    with pytest.raises(SourceError) as err:
        open_source(server.url(), Settings())
    assert str(err.value) == f"{server.url()}: no answer after 1 retries (Read timed out. (read timeout=0.2)); is the service running?"

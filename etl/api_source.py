"""HTTP API sources: JSON records fetched page by page from an https:// (or http://) URL.

A page's records are the JSON body itself when it is a list, or the list under `records`,
`data`, `results` or `items`. Pagination, decided by the first page:

* **links**: the body has a `next` (or `next_url`, or `links.next`) entry, or the response has a
  `Link: <...>; rel="next"` header: those links are followed until there is none (an integer
  `next` is taken as a page number);
* **numbers**: otherwise the URL is requested again with `page=2, 3, ...` (or, when the URL
  has an `offset` parameter, with the offset advanced by the records received) until a page
  is empty, answers 404, or repeats the previous page (a service that ignores the parameter).

Connection failures, timeouts and 500/502/503/504 answers are retried with exponential backoff
(urllib3 `Retry`; a `Retry-After` header is respected); a 4xx answer stops the run with the
status and the service's message. A bearer token comes from the environment variable named by
`--token-env` and is never printed. Credentials in the URL (`user:password@`, `token=`...) are
masked in the ledger, the lineage and every message.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import numpy as np
import pandas as pd
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from config.settings import Settings
from etl.ingestion import Chunk
from etl.mapping import resolve_columns
from etl.sources import LocalSource
from etl.workbook import empty_frame, text_column
from utils.errors import SourceError
from utils.urls import mask_url
from utils.vocabulary import SOURCE_COLUMNS

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 60.0
RETRIES = 5  # per request; waits 0, 1, 2, 4, 8 s with BACKOFF_S = 0.5 (urllib3 doubles it each time)
BACKOFF_S = 0.5
RETRY_STATUSES = (500, 502, 503, 504)
RECORD_KEYS = ("records", "data", "results", "items")
NEXT_KEYS = ("next", "next_url")
TOTAL_KEYS = ("count", "total", "total_count")


@dataclass
class _Page:
    url: str
    records: list
    next_url: str | None  # the next page by link, if any
    linked: bool  # the service paginates by links (body or Link header)
    total: int | None


class ApiSource(LocalSource):
    """JSON records from an HTTP API, page by page."""

    def __init__(self, url: str, settings: Settings, options) -> None:
        self.url = url
        self.location = mask_url(url)
        self.checksum = None
        self.encoding = None
        self._token = _token(options.token_env)
        self._token_env = options.token_env
        self.session = _session(self._token)
        try:
            self._first: _Page | None = self._fetch(url)
            self.keys = self._columns(self._first, options.column_map)
        except BaseException:
            self.session.close()
            raise
        self.estimated_rows = self._first.total

    def _columns(self, first: _Page, column_map: dict[str, str]) -> dict[str, str]:
        """canonical column -> record key, from the keys of the first page's records."""
        if not first.records:
            raise SourceError(f"{self.location}: the API returned no records; check the URL and its parameters")
        headers = list(dict.fromkeys(k for r in first.records if isinstance(r, dict) for k in r))
        if not headers:
            raise SourceError(f'{self.location}: the records are not JSON objects; expected objects like {{"InvoiceNo": ...}}')
        return {target: raw for raw, target in resolve_columns(headers, column_map, self.location).items()}

    # --- fetching -----------------------------------------------------------------------------------------

    def _fetch(self, url: str, numbered: bool = False) -> _Page | None:
        shown = mask_url(url)
        try:
            response = self.session.get(url, timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
        except requests.RequestException as exc:
            raise SourceError(self._hide(f"{shown}: no answer after {RETRIES} retries ({_reason(exc)}); is the service running?")) from None
        if numbered and response.status_code == 404:
            return None
        if response.status_code >= 400:
            raise SourceError(self._hide(self._http_error(response, shown)))
        if response.status_code == 204 or not response.content.strip():
            return _Page(response.url, [], None, False, None)
        try:
            body = response.json()
        except ValueError:
            kind = response.headers.get("Content-Type", "no Content-Type")
            raise SourceError(f"{shown}: the response is not JSON ({kind}); expected JSON records") from None
        next_url, linked = _next_link(body, response)
        return _Page(response.url, _records(body, shown), next_url, linked, _total(body))

    def _http_error(self, response: requests.Response, shown: str) -> str:
        status = response.status_code
        message = f"HTTP {status} {response.reason} from {shown}: {_service_message(response)}"
        if status >= 500:
            return f"{message} (still failing after {RETRIES} retries; try again later)"
        if status in (401, 403):
            hint = f"check the token in ${self._token_env}" if self._token_env else "pass a bearer token with --token-env VAR"
            return f"{message} ({hint})"
        return message

    def _hide(self, message: str) -> str:
        return message.replace(self._token, "***") if self._token else message

    def _pages(self) -> Iterator[_Page]:
        page = self._first or self._fetch(self.url)
        self._first = None
        yield page
        if page.linked:
            yield from self._linked(page)
        else:
            yield from self._numbered(page)

    def _linked(self, page: _Page) -> Iterator[_Page]:
        seen = {page.url}
        while page.next_url:
            if page.next_url in seen:
                raise SourceError(f"{mask_url(page.next_url)}: the API's next link points back to a page already read")
            seen.add(page.next_url)
            page = self._fetch(page.next_url)
            yield page

    def _numbered(self, page: _Page) -> Iterator[_Page]:
        param, value = _paging_param(self.url)
        previous = page.records
        while True:
            value += len(page.records) if param == "offset" else 1
            page = self._fetch(_with_param(self.url, param, value), numbered=True)
            if page is None or not page.records or page.records == previous:
                return
            previous = page.records
            yield page

    # --- chunks ---------------------------------------------------------------------------------------------

    def chunks(self, chunk_size: int) -> Iterator[Chunk]:
        rows: list[dict] = []
        numbers: list[int] = []
        bad: list[tuple[int, str, str]] = []
        number = 0
        try:
            for page in self._pages():
                for record in page.records:
                    number += 1
                    if isinstance(record, dict):
                        rows.append(record)
                        numbers.append(number)
                    else:
                        bad.append((number, json.dumps(record, ensure_ascii=False), "record is not a JSON object"))
                    if len(rows) + len(bad) >= chunk_size:
                        yield self._chunk(rows, numbers, bad)
                        rows, numbers, bad = [], [], []
            if rows or bad:
                yield self._chunk(rows, numbers, bad)
        finally:
            self.session.close()

    def _chunk(self, rows: list[dict], numbers: list[int], bad: list) -> Chunk:
        frame = pd.DataFrame({c: text_column([r.get(self.keys[c]) for r in rows]) for c in SOURCE_COLUMNS}) if rows else empty_frame()
        return Chunk(frame, np.asarray(numbers, dtype=np.int64), list(bad))


def _token(env_name: str | None) -> str | None:
    if not env_name:
        return None
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise SourceError(f"--token-env {env_name}: the environment variable {env_name} is not set; export it with the API's bearer token")
    return value


def _session(token: str | None) -> requests.Session:
    retry = Retry(
        total=RETRIES,
        connect=RETRIES,
        read=RETRIES,
        status=RETRIES,
        backoff_factor=BACKOFF_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=True,
    )
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"Accept": "application/json", "User-Agent": "retail-data-platform"})
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def _reason(exc: requests.RequestException) -> str:
    """The root cause of a failed request in a few words ("Connection refused", "Read timed out")."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    inner = exc.args[0] if exc.args else exc
    cause = str(getattr(inner, "reason", None) or inner)
    cause = cause.split("): ", 1)[-1]  # drop urllib3's "HTTPConnection(host=..., port=...): " prefix
    cause = re.sub(r"^Failed to establish a new connection: (\[Errno -?\d+\] )?", "", cause)
    return mask_url(cause.strip() or type(exc).__name__)[:200]


def _service_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("error", "message", "detail"):
            if isinstance(body.get(key), str) and body[key].strip():
                return body[key].strip()[:300]
    text = " ".join(response.text.split())
    return text[:300] or "(empty response)"


def _records(body: object, shown: str) -> list:
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in RECORD_KEYS:
            if isinstance(body.get(key), list):
                return body[key]
        found = ", ".join(list(body)[:10]) or "none"
        raise SourceError(
            f"{shown}: the JSON response holds no list of records (expected a list, or one under {', '.join(RECORD_KEYS)}); found keys: {found}"
        )
    raise SourceError(f"{shown}: the JSON response is a {type(body).__name__}, not a list of records")


def _next_link(body: object, response: requests.Response) -> tuple[str | None, bool]:
    """(URL of the next page or None, whether the service paginates by links at all)."""
    if isinstance(body, dict):
        for key in NEXT_KEYS:
            if key in body:
                return _resolve(body[key], response.url), True
        links = body.get("links") or body.get("_links")
        if isinstance(links, dict) and "next" in links:
            target = links["next"]
            return _resolve(target.get("href") if isinstance(target, dict) else target, response.url), True
    if "next" in response.links:
        return urljoin(response.url, response.links["next"]["url"]), True
    return None, "link" in response.headers


def _resolve(target: object, base: str) -> str | None:
    if isinstance(target, bool) or target is None or target == "":
        return None
    if isinstance(target, int):
        return _with_param(base, "page", target)
    return urljoin(base, str(target))


def _total(body: object) -> int | None:
    if isinstance(body, dict):
        for key in TOTAL_KEYS:
            value = body.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value > 0:
                return value
    return None


def _paging_param(url: str) -> tuple[str, int]:
    query = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    for param, default in (("offset", 0), ("page", 1)):
        if param in query:
            try:
                return param, int(query[param] or default)
            except ValueError:
                raise SourceError(f"{mask_url(url)}: the {param} parameter is not a number") from None
    return "page", 1


def _with_param(url: str, param: str, value: int) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    query.append((param, str(value)))
    return urlunsplit(parts._replace(query=urlencode(query)))

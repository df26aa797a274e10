"""Line-exact reading of delimited text: for files the fast parser cannot be trusted with.

pyarrow's CSV parser lets a quoted field run over line breaks. That is right for a description
typed over two lines, but one stray quote (`…,"12 RECORD,…`) makes it swallow every following
line up to the next quote into one record, and the lines inside it are lost as rows. The
pre-flight scan (`LineStats`) looks at every line holding a quote; when one of them is not
plainly quoted (quotes only around whole fields, closed on the same line), or the text is
UTF-16/32 or mixes UTF-8 with Windows-1252, the file is read here instead, line by line:

* a line that does not end inside a quoted field is one record (read leniently, like pyarrow
  and Python's csv: a quote opens a quoted field only at the field's start, text after a
  closing quote is kept);
* a line that ends inside a quoted field is joined with the following lines (at most
  MAX_SPAN) only if that gives one strictly quoted record with the header's number of fields;
  otherwise that line alone is a malformed record and reading goes on with the next line.

So every non-empty line ends as a row or as a malformed record, a legitimate multi-line value
stays one record, and a file cut inside a quoted field keeps all its complete lines.
"""

from __future__ import annotations

import codecs
import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

MIXED_ENCODING = "utf-8+cp1252"  # UTF-8 where the bytes are UTF-8, Windows-1252 elsewhere
WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
MAX_SPAN = 100  # lines one quoted value may span
_LINE = re.compile(r"([^\r\n]*)(\r\n|\r|\n)")
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|\xe0[\xa0-\xbf][\x80-\xbf]|[\xe1-\xec\xee\xef][\x80-\xbf]{2}|\xed[\x80-\x9f][\x80-\xbf]"
    rb"|\xf0[\x90-\xbf][\x80-\xbf]{2}|[\xf1-\xf3][\x80-\xbf]{3}|\xf4[\x80-\x8f][\x80-\xbf]{2}"
)


def _cp1252_fallback(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler: bytes that are not UTF-8 are read as Windows-1252 (Latin-1 where
    Windows-1252 leaves a byte undefined)."""
    if not isinstance(err, UnicodeDecodeError):
        raise err
    bad = err.object[err.start : err.end]
    return "".join(bytes([b]).decode("cp1252", errors="ignore") or chr(b) for b in bad), err.end


codecs.register_error("rdp-cp1252", _cp1252_fallback)


def wide_encoding(head: bytes) -> str | None:
    """utf-16 or utf-32 when the text starts with that byte-order mark."""
    return next((name for bom, name in WIDE_BOMS if head.startswith(bom)), None)


def has_utf8_multibyte(block: bytes) -> bool:
    """Whether the bytes hold at least one well-formed non-ASCII UTF-8 sequence."""
    return _UTF8_MULTIBYTE.search(block) is not None


def decoder(encoding: str) -> codecs.IncrementalDecoder:
    """An incremental decoder for an encoding chosen by the scan (or the mixed one)."""
    if encoding == MIXED_ENCODING:
        return codecs.getincrementaldecoder("utf-8")(errors="rdp-cp1252")
    return codecs.getincrementaldecoder(encoding)(errors="strict")


def decode(data: bytes, encoding: str) -> str:
    """Decode a complete piece of bytes (a header line)."""
    return decoder(encoding).decode(data, final=True)


# ---------------------------------------------------------------------------------------------
# the pre-flight look at every line


@dataclass
class LineStats:
    """What the scan learns about the lines of an ASCII-compatible byte stream: how many are not
    empty, the longest, and whether any holds a quote that is not plain whole-field quoting
    (the reason to read the file line by line). Fed block by block; `close()` at the end."""

    delimiter: str
    lines: int = 0  # non-empty lines, the header included
    longest: int = 0
    irregular: str | None = None  # the first line whose quoting is not plain, shortened
    _tail: bytes = b""

    def __post_init__(self) -> None:
        d = re.escape(self.delimiter.encode())
        field = rb'(?:"(?:[^"]|"")*"|[^"' + d + rb"\r\n]*)"
        self._plain = re.compile(field + rb"(?:" + d + field + rb")*")
        self._ascii = len(self.delimiter.encode()) == 1

    def feed(self, block: bytes) -> None:
        data = self._tail + block
        cut = max(data.rfind(b"\n"), data.rfind(b"\r"))
        if cut < 0:
            self._tail = data
            return
        if data[cut] == 13 and cut == len(data) - 1:  # a CR that may be the first half of CRLF
            self._tail = b""
            self._lines(data)
            return
        self._tail = data[cut + 1 :]
        self._lines(data[: cut + 1])

    def close(self) -> None:
        if self._tail:
            self._lines(self._tail + b"\n")
            self._tail = b""

    def _lines(self, data: bytes) -> None:
        """Every line of `data`, which ends with a line break."""
        arr = np.frombuffer(data, dtype=np.uint8)
        breaks = np.flatnonzero((arr == 10) | (arr == 13) if b"\r" in data else arr == 10)
        starts = np.concatenate(([0], breaks[:-1] + 1))
        lengths = breaks - starts
        self.lines += int(np.count_nonzero(lengths))
        if len(lengths):
            self.longest = max(self.longest, int(lengths.max()))
        if self.irregular is None and b'"' in data:
            self._check_quotes(data, arr, starts, breaks)

    def _check_quotes(self, data: bytes, arr: np.ndarray, starts: np.ndarray, breaks: np.ndarray) -> None:
        quoted = np.unique(np.searchsorted(breaks, np.flatnonzero(arr == 34)))
        for i in quoted.tolist():
            line = data[starts[i] : breaks[i]]
            if not self._ascii or self._plain.fullmatch(line) is None:
                self.irregular = line[:80].decode("latin-1")
                return


# ---------------------------------------------------------------------------------------------
# line-by-line records


def text_lines(blocks: Iterator[bytes], encoding: str) -> Iterator[tuple[str, str]]:
    """(content, line break) of every line of the decoded text; a last line without a break
    comes with ''. Line breaks are LF, CRLF or CR, as the fast parser reads them."""
    dec = decoder(encoding)
    tail = ""
    final = False
    while not final:
        block = next(blocks, None)
        final = block is None
        text = tail + dec.decode(block or b"", final=final)
        hold = "\r" if not final and text.endswith("\r") else ""
        text = text[:-1] if hold else text
        end = 0
        for m in _LINE.finditer(text):
            yield m.group(1), m.group(2)
            end = m.end()
        tail = text[end:] + hold
    if tail:
        yield tail, ""


class Fields:
    """Splits delimited text into fields the way pyarrow and Python's csv do, fed piece by piece:
    a quote opens a quoted field only at the start of a field, `""` inside one is a quote, and
    text after a closing quote is kept. Notes whether the text ends inside a quoted field (`open`)
    and whether every quoted field was closed right before a delimiter or the end (`strict`, the
    meaning of Python's csv `strict=True`)."""

    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self._special = re.compile(f'[{re.escape(delimiter)}"]')
        self.done: list[str] = []
        self._buf: list[str] = []
        self.open = False
        self.strict = True
        self._at_start = True
        self._closed = False

    def feed(self, text: str) -> Fields:
        pos, n = 0, len(text)
        while pos < n:
            if self.open:
                j = text.find('"', pos)
                if j < 0:
                    self._buf.append(text[pos:])
                    return self
                self._buf.append(text[pos:j])
                if j + 1 < n and text[j + 1] == '"':
                    self._buf.append('"')
                    pos = j + 2
                    continue
                self.open, self._closed, pos = False, True, j + 1
                continue
            m = self._special.search(text, pos)
            j = m.start() if m else n
            if j > pos:
                self.strict &= not self._closed
                self._buf.append(text[pos:j])
                self._at_start = False
            if m is None:
                return self
            if text[j] == self.delimiter:
                self.done.append("".join(self._buf))
                self._buf, self._at_start, self._closed = [], True, False
            elif self._at_start:
                self.open, self._at_start = True, False
            else:  # a quote inside an unquoted field: kept as text
                self._buf.append('"')
            pos = j + 1
        return self

    def fields(self) -> list[str]:
        return [*self.done, "".join(self._buf)]


def records(lines: Iterator[tuple[str, str]], width: int, delimiter: str) -> Iterator[tuple[list[str] | None, str, str]]:
    """(fields or None, raw text, problem) of every record after the header line; empty lines
    are skipped (as the fast parser skips them)."""
    source = iter(lines)
    next(source, None)  # the header
    queue: deque[tuple[str, str]] = deque()
    while True:
        if not queue:
            line = next(source, None)
            if line is None:
                return
            queue.append(line)
        content = queue[0][0]
        if not content:
            queue.popleft()
            continue
        if '"' not in content:
            queue.popleft()
            yield _single(content.split(delimiter), content, width)
            continue
        parsed = Fields(delimiter).feed(content)
        if not parsed.open:
            queue.popleft()
            yield _single(parsed.fields(), content, width)
            continue
        joined = _join(parsed, queue, source, width)
        if joined is not None:
            yield joined
            continue
        queue.popleft()
        yield None, content, "a quoted field is not closed at the end of the line"


def _single(fields: list[str], content: str, width: int) -> tuple[list[str] | None, str, str]:
    if len(fields) == width:
        return fields, content, ""
    return None, content, f"expected {width} fields, found {len(fields)}"


def _join(parsed: Fields, queue: deque, source: Iterator, width: int) -> tuple[list[str], str, str] | None:
    """The record of the line at the head of `queue` continued on the next lines, if it closes
    within MAX_SPAN lines as one strictly quoted record of `width` fields (those lines are then
    taken off the queue); None otherwise (the queue keeps them)."""
    for k in range(1, MAX_SPAN):
        if len(queue) <= k:
            line = next(source, None)
            if line is None:
                return None
            queue.append(line)
        parsed.feed(queue[k - 1][1] + queue[k][0])
        if not parsed.open:
            fields = parsed.fields()
            if not parsed.strict or len(fields) != width:
                return None
            raw = "".join(c + (t if i < k else "") for i, (c, t) in enumerate(list(queue)[: k + 1]))
            for _ in range(k + 1):
                queue.popleft()
            return fields, raw, ""
    return None

"""RFM segments: the rule table that names a customer from its recency score R and its
frequency-monetary score FM (both 1-5). docs/reports.md shows the same table as a grid.

Every (R, FM) pair matches exactly one rule; a test checks the 25 of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    name: str
    r: tuple[int, int]  # recency score range, inclusive
    fm: tuple[int, int]  # frequency-monetary score range, inclusive
    meaning: str

    def matches(self, r: int, fm: int) -> bool:
        return self.r[0] <= r <= self.r[1] and self.fm[0] <= fm <= self.fm[1]


SEGMENTS: tuple[Segment, ...] = (
    Segment("champions", (4, 5), (4, 5), "ordered recently, order often and spend the most"),
    Segment("loyal", (3, 3), (4, 5), "order often and spend well; the last order is a little older"),
    Segment("potential loyalists", (4, 5), (2, 3), "recent customers with a few orders"),
    Segment("new", (5, 5), (1, 1), "first, small orders very recently"),
    Segment("promising", (4, 4), (1, 1), "recent, with one small order so far"),
    Segment("need attention", (3, 3), (3, 3), "average on every score"),
    Segment("about to sleep", (3, 3), (1, 2), "few, small orders, the last one a while ago"),
    Segment("at risk", (1, 2), (3, 4), "ordered often or spent well, but long ago"),
    Segment("can't lose", (1, 2), (5, 5), "were among the best customers, not seen for long"),
    Segment("hibernating", (2, 2), (1, 2), "few, small orders, long ago"),
    Segment("lost", (1, 1), (1, 2), "the oldest last orders, few and small"),
)
SEGMENT_NAMES = tuple(s.name for s in SEGMENTS)


def segment_of(r: int, fm: int) -> str:
    """The name of the segment of scores (r, fm)."""
    return next(s.name for s in SEGMENTS if s.matches(r, fm))


def fm_score(f: int, m: int) -> int:
    """FM: the mean of F and M, rounded half up."""
    return (f + m + 1) // 2


def segment_case(r: str, fm: str) -> str:
    """The rule table as an SQL CASE over the column expressions `r` and `fm` (constant text)."""
    whens = " ".join(
        f"WHEN {r} BETWEEN {s.r[0]} AND {s.r[1]} AND {fm} BETWEEN {s.fm[0]} AND {s.fm[1]} THEN '{s.name.replace(chr(39), chr(39) * 2)}'"
        for s in SEGMENTS
    )
    return f"CASE {whens} END"

"""Synthetic sales extracts in the UCI Online Retail layout.

The generator writes a CSV that looks and misbehaves like the real extract: cancellations,
stock write-offs, lines without a customer, zero prices, exact duplicate lines, bad-debt
adjustments, customers who move country, products whose description or price changes.

How it stays fast, small and deterministic:

* Every random choice is a hash of (seed, stream, invoice number, line number) - a
  counter-based generator - so any invoice or line can be recomputed on its own. A cancellation
  re-derives the lines of the earlier order it refunds instead of remembering them, and the
  file does not depend on ``batch_rows``.
* Invoices are produced in batches of about ``batch_rows`` lines with numpy; the only state
  carried between batches is a few counters plus the start rows and customers of the last
  few hundred invoices, so memory stays flat for any number of rows.
* The time of an invoice is its position in the file pushed through the inverse of a
  cumulative trading-intensity curve (season x weekday x hour), so dates never go backwards.
* Lines are rendered with pyarrow string kernels from small lookup tables and the resulting
  buffer is written as is.
"""

from __future__ import annotations

import functools
import glob
import gzip
import hashlib
import itertools
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import BinaryIO, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from utils.vocabulary import SOURCE_COLUMNS

logger = logging.getLogger(__name__)
_T = TypeVar("_T")

FIRST_INVOICE = 536365
CUSTOMER_ID_MIN, CUSTOMER_ID_MAX = 12346, 18287
MAX_CUSTOMERS = 4400

_MAX_LINES = 1200  # longest invoice
_LINE_BITS = 20  # line number bits in a line key (must exceed log2(_MAX_LINES))
_REF_WINDOW = 400  # a cancellation refunds one of the previous _REF_WINDOW invoices
_RENDER_SLICE = 1_000_000  # rows per pyarrow join call (keeps string offsets 32-bit)

# Invoice kinds.
_SALE, _ANON, _CANCEL, _WRITE_OFF, _ADJUST = 0, 1, 2, 3, 4

# Target fractions of rows (the real extract's profile).
_SHARE_CANCEL = 0.0171
_SHARE_WRITE_OFF = 0.0025
_SHARE_ANON = 0.2490 - _SHARE_WRITE_OFF
_P_DUPLICATE = 0.0056  # exact repeat of an earlier line, per customer-order line (re-orders
# that happen to keep the quantity bring all exact repeats to ~0.97 % of rows)
_P_REORDER = 0.013  # same item as an earlier line, another quantity
_P_EMPTY_DESC = 0.0045  # anonymous sale line with no description and price 0
_P_FREE = 0.0040  # anonymous sale line given away (price 0)
_P_SPECIAL = 0.0016  # sale line on a non-merchandise code (manual, carriage, vouchers ...)
_P_PADS = 1 / 130_000  # the cushion-pads line priced 0.001
_P_HUGE = 1 / 40_000  # a bulk order of thousands
_P_POST_ABROAD = 0.5  # first line of a foreign customer's order is postage
_P_POST_HOME = 0.004
_P_DOT = 0.2  # first line of an anonymous (web shop) order is dotcom postage
_P_CANCEL_FEE = 0.04  # cancellation that refunds a fee or discount instead of goods
_ADJUST_EVERY = 200_000  # one bad-debt adjustment per this many rows
_SWITCH_SHARE = 0.0018  # customers who change country once

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)

_STREAMS = (
    "kind",
    "size",
    "customer",
    "jitter",
    "ref",
    "cancel",
    "anon_country",
    "post",
    "basket",
    "write_off",
    "write_off_qty",
    "adjust",
    "dup",
    "product",
    "qty",
    "extra",
    "cancel_qty",
    "fee",
)
_S = {name: i for i, name in enumerate(_STREAMS)}

# ---------------------------------------------------------------------------------------------
# Word lists for made-up product names.
_COLOURS = (
    "RED", "BLUE", "PINK", "GREEN", "IVORY", "CREAM", "WHITE", "BLACK", "LILAC", "MINT",
    "AQUA", "YELLOW", "ORANGE", "SILVER", "GOLD", "TEAL", "CORAL", "PEACH", "SAGE", "NAVY",
    "PURPLE", "GREY", "ROSE", "DUCK EGG", "PASTEL",
)  # fmt: skip
_MOTIFS = (
    "SPOTTY", "STRIPED", "FLORAL", "GINGHAM", "PAISLEY", "HEART", "STAR", "SONGBIRD", "OWL",
    "DAISY", "CHECK", "POLKADOT", "VINTAGE", "RETRO", "REGENCY", "SCANDI", "FOLK ART",
    "BAROQUE", "CHERRY", "LEMON", "BUNNY", "ROBIN", "WOODLAND", "SEASIDE", "DOILY", "LACE",
    "HANGING HEART", "SNOWFLAKE", "REINDEER", "BUTTERFLY", "DRAGONFLY", "APPLE", "PEAR",
    "ZEBRA", "LEOPARD", "CIRCUS", "SPACEBOY", "FAIRY", "PIRATE", "DINOSAUR", "ALPHABET",
    "UNION FLAG", "TOADSTOOL", "HEDGEHOG", "PAWPRINT", "CUPCAKE", "TEAPOT", "CHANDELIER",
    "LOVEBIRD", "SWALLOW", "FLAMINGO", "MOROCCAN", "ORIENTAL", "DIAMANTE", "GLITTER",
)  # fmt: skip
_MATERIALS = (
    "CERAMIC", "ENAMEL", "GLASS", "WOODEN", "METAL", "ZINC", "TIN", "FELT", "PAPER", "CANVAS",
    "WICKER", "LINEN", "COTTON", "PORCELAIN", "ACRYLIC", "RATTAN", "BAMBOO", "WIRE", "JUTE",
)  # fmt: skip
_OBJECTS = (
    "MUG", "TEACUP AND SAUCER", "CAKE STAND", "T-LIGHT HOLDER", "LANTERN", "DOORSTOP",
    "NAPKINS", "BUNTING", "LUNCH BOX", "SHOPPER BAG", "HOT WATER BOTTLE", "COAT HANGER",
    "PHOTO FRAME", "WALL CLOCK", "CANDLE", "NOTEBOOK", "WRAPPING PAPER", "GREETING CARD",
    "STICKER SHEET", "CUSHION COVER", "TEA TOWEL", "APRON", "OVEN GLOVE", "STORAGE TIN",
    "JAM JAR", "MILK JUG", "SERVING BOWL", "CHOPPING BOARD", "DOORMAT", "KEY RING",
    "HAIR CLIP", "PURSE", "PLANT POT", "WATERING CAN", "BIRD FEEDER", "WIND CHIME",
    "GARLAND", "WREATH", "BAUBLE", "TREE DECORATION", "SNOW GLOBE", "MONEY BOX",
    "PENCIL CASE", "JIGSAW", "SPINNING TOP", "PARASOL", "UMBRELLA", "BOTTLE OPENER",
    "PARTY CUPS", "PAPER PLATES", "CAKE CASES", "BAKING SET", "EGG CUP", "TOAST RACK",
    "PEG BAG", "WASHBAG", "TRINKET BOX", "JEWELLERY STAND", "HOOK", "DRAWER KNOB",
    "NIGHT LIGHT", "STRING LIGHTS", "WALL SIGN", "MEMO BOARD", "CLIPBOARD", "RULER",
    "PICNIC BASKET", "WATER BOTTLE", "BEAKER", "TUMBLER", "DOILIES", "GIFT BAG",
    "GIFT TAGS", "RIBBONS", "BUTTONS", "SEWING KIT", "THIMBLE", "TAPE MEASURE",
)  # fmt: skip
_SIZES = ("SMALL", "LARGE", "JUMBO", "MINI", "GIANT")
_SIGN_TEXTS = ("TEA TIME", "HOME SWEET HOME", "GONE FISHING", "NO PARKING", "BAKERY", "KITCHEN")
_POUND_OBJECTS = ("BADGES", "ERASERS", "STICKERS", "HAIR BOBBLES", "PENCILS", "BALLOONS")
_FURNITURE = (
    "CABINET", "CHEST OF DRAWERS", "SIDEBOARD", "DRESSER", "GARDEN BENCH", "FLOOR LAMP",
    "MIRROR", "PLANT STAND", "BOOKCASE", "BLANKET BOX",
)  # fmt: skip
_WRITE_OFF_NOTES = (
    ("", 0.62),
    ("damaged", 0.08),
    ("check", 0.08),
    ("?", 0.05),
    ("wet damaged", 0.03),
    ("thrown away", 0.02),
    ("missing", 0.02),
    ("smashed", 0.02),
    ("mouldy, thrown away", 0.015),
    ("faulty", 0.015),
    ("crushed", 0.01),
    ("lost in transit", 0.01),
    ("stock count", 0.02),
    ("sold as set online", 0.02),
)

# (code, description, weight on sale lines, weight on fee refunds, price rule).
# A price rule is ("menu", prices, weights) or ("lognormal", median, sigma); prices in pounds.
_SPECIALS: tuple[tuple[str, str, float, float, tuple], ...] = (
    ("POST", "POSTAGE", 0.02, 0.0, ("menu", (18, 15, 28, 40), (0.6, 0.15, 0.15, 0.1))),
    ("DOT", "DOTCOM POSTAGE", 0.0, 0.0, ("lognormal", 120.0, 0.7)),
    ("M", "Manual", 0.40, 0.45, ("lognormal", 2.5, 1.3)),
    ("C2", "CARRIAGE", 0.12, 0.0, ("menu", (50, 40, 25), (0.7, 0.2, 0.1))),
    ("D", "Discount", 0.0, 0.25, ("lognormal", 15.0, 0.8)),
    ("S", "SAMPLES", 0.0, 0.12, ("lognormal", 20.0, 0.8)),
    ("BANK CHARGES", "Bank Charges", 0.04, 0.05, ("menu", (15,), (1.0,))),
    ("AMAZONFEE", "AMAZON FEE", 0.0, 0.05, ("lognormal", 1200.0, 1.0)),
    ("CRUK", "CRUK Commission", 0.0, 0.08, ("lognormal", 25.0, 0.6)),
    ("PADS", "CUSHION PADS TO MATCH", 0.0, 0.0, ("menu", (0.001,), (1.0,))),
    ("DCGSSBOY", "BOYS PARTY BAG", 0.07, 0.0, ("menu", (3.29, 4.15), (0.7, 0.3))),
    ("DCGSSGIRL", "GIRLS PARTY BAG", 0.07, 0.0, ("menu", (3.29, 4.15), (0.7, 0.3))),
    ("gift_0001_10", "£10 GIFT VOUCHER", 0.07, 0.0, ("menu", (10,), (1.0,))),
    ("gift_0001_20", "£20 GIFT VOUCHER", 0.09, 0.0, ("menu", (20,), (1.0,))),
    ("gift_0001_30", "£30 GIFT VOUCHER", 0.06, 0.0, ("menu", (30,), (1.0,))),
    ("gift_0001_40", "£40 GIFT VOUCHER", 0.03, 0.0, ("menu", (40,), (1.0,))),
    ("gift_0001_50", "£50 GIFT VOUCHER", 0.03, 0.0, ("menu", (50,), (1.0,))),
)
_ADJUST_CODE, _ADJUST_DESC = "B", "Adjust bad debt"

# Usual order units by base price: (from cents, pack sizes, weights).
_PACKS = (
    (0, (6, 12, 24, 25, 48), (0.15, 0.35, 0.3, 0.1, 0.1)),
    (50, (4, 6, 12, 24), (0.15, 0.3, 0.4, 0.15)),
    (100, (1, 2, 4, 6, 12), (0.25, 0.2, 0.15, 0.25, 0.15)),
    (200, (1, 2, 3, 4, 6), (0.35, 0.2, 0.15, 0.15, 0.15)),
    (400, (1, 2, 4), (0.6, 0.25, 0.15)),
    (800, (1, 2), (0.8, 0.2)),
)

# Countries: relative number of customers (the first is the home market).
_COUNTRIES = (
    ("United Kingdom", 3950), ("Germany", 95), ("France", 87), ("Spain", 31), ("Belgium", 25),
    ("Switzerland", 21), ("Portugal", 19), ("Italy", 15), ("Finland", 12), ("Austria", 11),
    ("Norway", 10), ("Netherlands", 9), ("Australia", 9), ("Channel Islands", 9),
    ("Denmark", 9), ("Cyprus", 8), ("Sweden", 8), ("Japan", 8), ("Poland", 6), ("EIRE", 4),
    ("USA", 4), ("Canada", 4), ("Unspecified", 4), ("Israel", 4), ("Greece", 4), ("Malta", 2),
    ("United Arab Emirates", 2), ("Bahrain", 2), ("Lithuania", 1), ("Czech Republic", 1),
    ("Lebanon", 1), ("RSA", 1), ("Saudi Arabia", 1), ("Singapore", 1), ("Iceland", 1),
    ("Brazil", 1), ("European Community", 1), ("Hong Kong", 0),
)  # fmt: skip
_ANON_COUNTRIES = (
    ("United Kingdom", 0.975), ("EIRE", 0.008), ("Hong Kong", 0.004), ("Unspecified", 0.004),
    ("Switzerland", 0.003), ("France", 0.002), ("Israel", 0.002), ("Portugal", 0.002),
)  # fmt: skip
_FOREIGN_ACTIVITY = 1.1  # foreign customers buy more per head

# Trading pattern: month midpoints (Jan..Dec), weekdays (Mon..Sun), hours from 07:00.
_MONTH_LEVEL = (0.95, 0.82, 0.95, 1.0, 1.03, 1.0, 1.05, 0.97, 1.35, 1.6, 2.0, 1.75)
_WEEKDAY_LEVEL = (0.95, 1.02, 0.95, 1.05, 0.82, 0.0, 0.65)
_FIRST_HOUR = 7
_HOUR_LEVEL = (1, 10, 33, 48, 57, 76, 71, 66, 75, 53, 28, 8, 4, 1)
_CLOSED = ((12, 24), (12, 25), (12, 26), (12, 27), (12, 28), (12, 29), (12, 30), (12, 31),
           (1, 1), (1, 2), (1, 3))  # fmt: skip


@dataclass(frozen=True)
class GenerateResult:
    """What `generate_sales` wrote."""

    path: Path
    rows: int  # data rows written (header excluded)
    invoices: int
    customers: int  # distinct non-empty CustomerIDs written
    duplicates: int  # rows that repeat an earlier row in all eight fields
    seconds: float
    files: int = 1  # CSV files written (a folder holds one per day or per store)
    bytes: int = 0  # bytes of the CSV files (as written: compressed for .gz)


# ---------------------------------------------------------------------------------------------
# Counter-based randomness.


def _splitmix(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser, element-wise on uint64 (wrapping arithmetic)."""
    z = x + _GOLDEN
    z ^= z >> np.uint64(30)
    z *= _MIX1
    z ^= z >> np.uint64(27)
    z *= _MIX2
    z ^= z >> np.uint64(31)
    return z


class _Hasher:
    """Uniform numbers as a pure function of (seed, stream, key)."""

    def __init__(self, seed: int) -> None:
        base = _splitmix(np.array([seed & _MASK64], dtype=np.uint64))
        steps = np.arange(1, len(_STREAMS) + 1, dtype=np.uint64) * _MIX2
        self._salts = _splitmix(base + steps)

    def bits(self, keys: np.ndarray, stream: str) -> np.ndarray:
        return _splitmix(keys ^ self._salts[_S[stream]])

    def unit(self, keys: np.ndarray, stream: str) -> np.ndarray:
        return (self.bits(keys, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def pair(self, keys: np.ndarray, stream: str) -> tuple[np.ndarray, np.ndarray]:
        h = self.bits(keys, stream)
        hi = (h >> np.uint64(32)).astype(np.float64) * 2.0**-32
        lo = (h & np.uint64(0xFFFFFFFF)).astype(np.float64) * 2.0**-32
        return hi, lo


def _cumulative(weights: np.ndarray) -> np.ndarray:
    """Normalised cumulative weights whose last value is exactly 1."""
    cum = np.cumsum(np.asarray(weights, dtype=np.float64))
    cum /= cum[-1]
    cum[-1] = 1.0
    return cum


def _pick(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draw: index i with cum[i-1] <= u < cum[i]."""
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def _lognormal_sizes(median: float, sigma: float, cap: int) -> np.ndarray:
    """Probabilities of the integers 1..cap under a discretised log-normal."""
    s = np.arange(1, cap + 1, dtype=np.float64)
    p = np.exp(-((np.log(s) - math.log(median)) ** 2) / (2 * sigma**2)) / s
    return p / p.sum()


def _mean(p: np.ndarray) -> float:
    return float((p * np.arange(1, len(p) + 1)).sum())


# ---------------------------------------------------------------------------------------------
# Calendar: position in the file -> minute.


class _Calendar:
    """Cumulative trading intensity over days and minutes of the trading day."""

    def __init__(self, start: date, days: int, rng: np.random.Generator) -> None:
        self.start = start
        level = np.array([self._level(start + timedelta(days=i)) for i in range(days)])
        level *= rng.lognormal(0.0, 0.18, days)
        if level.sum() <= 0:  # a window with only closed days: trade anyway
            level = np.ones(days)
        self.day_weight = level / level.sum()
        self.day_cum = _cumulative(level)
        per_minute = np.repeat(np.asarray(_HOUR_LEVEL, dtype=np.float64), 60)
        self.minute_cum = _cumulative(per_minute)

    @staticmethod
    def _level(day: date) -> float:
        if (day.month, day.day) in _CLOSED:
            return 0.0
        month_pos = day.month - 1 + (day.day - 0.5) / 31.0  # months since 1 Jan
        xs = np.arange(-1, 13) + 0.5
        ys = (_MONTH_LEVEL[-1], *_MONTH_LEVEL, _MONTH_LEVEL[0])
        return float(np.interp(month_pos, xs, ys)) * _WEEKDAY_LEVEL[day.weekday()]

    def minutes(self, x: np.ndarray) -> np.ndarray:
        """Minutes since start midnight for positions x in [0, 1) (monotone in x)."""
        day = _pick(self.day_cum, x)
        before = self.day_cum[day] - self.day_weight[day]
        frac = np.clip((x - before) / np.maximum(self.day_weight[day], 1e-300), 0.0, 1.0)
        minute = _pick(self.minute_cum, frac)
        return day.astype(np.int64) * 1440 + _FIRST_HOUR * 60 + minute

    def render(self, minutes: np.ndarray) -> pa.Array:
        """`YYYY-MM-DD HH:MM:SS` strings for minute offsets."""
        base = np.datetime64(self.start, "m")
        stamps = (base + minutes.astype("timedelta64[m]")).astype("datetime64[s]")
        return pc.strftime(pa.array(stamps), format="%Y-%m-%d %H:%M:%S")


# ---------------------------------------------------------------------------------------------
# Catalogue: products and customers, built once from the seed.


def _csv_field(text: str) -> str:
    if any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _one(rng: np.random.Generator, options: tuple[_T, ...]) -> _T:
    """One of `options`, uniformly (cheaper than Generator.choice on a tuple)."""
    return options[int(rng.integers(len(options)))]


def _product_name(rng: np.random.Generator, colour: str) -> str:
    """One made-up product name, upper case."""
    form = rng.random()
    obj = _one(rng, _OBJECTS)
    motif = _one(rng, _MOTIFS)
    if form < 0.30:
        return f"{colour} {motif} {obj}"
    if form < 0.50:
        return f"{motif} {_one(rng, _MATERIALS)} {obj}"
    if form < 0.64:
        return f"{colour} {_one(rng, _MATERIALS)} {obj}"
    if form < 0.76:
        return f"SET/{_one(rng, (3, 4, 6, 12))} {colour} {motif} {obj}"
    if form < 0.90:
        return f"{_one(rng, _SIZES)} {motif} {obj}"
    if form < 0.975:
        return f"{motif} {obj} {_one(rng, ('WITH LID', 'IN BOX', 'DESIGN', 'SET'))}"
    if form < 0.993:
        return f"{obj}, {colour} {motif}"
    return f'{_one(rng, _MATERIALS)} SIGN "{_one(rng, _SIGN_TEXTS)}"'


def _variant_name(name: str, rng: np.random.Generator) -> str:
    """A second wording of a product name (a later catalogue edit)."""
    words = name.split(" ")
    for i, word in enumerate(words):
        if word in _COLOURS:
            others = [c for c in _COLOURS if c != word]
            words[i] = _one(rng, tuple(others))
            return " ".join(words)
    return "ASSORTED " + name


@dataclass
class _Products:
    codes: list[str]
    texts: list[str]  # every distinct description
    main: np.ndarray  # product -> text id
    alt: np.ndarray  # product -> text id used from alt_from on
    alt_from: np.ndarray  # file position where the alternative wording starts (2 = never)
    cents: np.ndarray  # (products, 2) base price before / after price_from
    price_from: np.ndarray
    pack: np.ndarray  # usual pack size
    merch_cum: np.ndarray  # popularity of merchandise (ids 0..merch-1)
    special: dict[str, int]  # non-merchandise code -> product id
    sale_special_cum: np.ndarray
    sale_special_ids: np.ndarray
    fee_cum: np.ndarray
    fee_ids: np.ndarray
    write_off_texts: np.ndarray  # text ids
    write_off_cum: np.ndarray
    empty_text: int
    adjust: int  # product id of "B"
    rule_menu: np.ndarray  # (specials, 4) price menu in mills, indexed by product - first_special
    rule_cum: np.ndarray
    rule_median: np.ndarray  # log-normal median in mills (0 = menu rule)
    rule_sigma: np.ndarray
    first_special: int


def _base_price(rng: np.random.Generator, furniture: bool) -> int:
    if furniture:
        pounds = min(650.0, max(40.0, rng.lognormal(math.log(120), 0.6)))
        return round(pounds) * 100 - _one(rng, (0, 5, 50))
    pounds = min(30.0, max(0.19, rng.lognormal(math.log(2.1), 0.8)))
    if pounds < 1:
        return round(pounds * 100)
    return max(19, round(pounds * 20) * 5 - _one(rng, (0, 0, 5, 10)))


def _merch_names(rng: np.random.Generator, bases: int) -> list[list[str]]:
    """Names grouped by base code; a family shares the name with different colours."""
    seen: set[str] = set()
    groups: list[list[str]] = []
    pound_left = 6
    while len(groups) < bases:
        colours = [_COLOURS[i] for i in rng.permutation(len(_COLOURS))[:4]]
        family = rng.random() < 0.10
        roll = rng.random()
        if roll < 0.005:
            mat = _one(rng, _MATERIALS)
            names = [f"{c} {mat} {_one(rng, _FURNITURE)}" for c in colours[:1]]
        elif pound_left and roll < 0.01:
            pound_left -= 1
            names = [f"SET/4 {_one(rng, _MOTIFS)} {_one(rng, _POUND_OBJECTS)} £1"]
        elif family:
            rest = _product_name(rng, "@")
            if "@" not in rest:
                continue
            names = [rest.replace("@", c) for c in colours[: int(rng.integers(2, 5))]]
        else:
            names = [_product_name(rng, colours[0])]
        if any(n in seen for n in names):
            continue
        seen.update(names)
        groups.append(names)
    return groups


def _build_products(rng: np.random.Generator) -> _Products:
    groups = _merch_names(rng, 3250)
    pound_ranks = np.array([600, 900, 1300, 1800, 2400, 3000])  # the £1 sets sell now and then
    numbers = np.concatenate([rng.choice(np.arange(20600, 23400), 2000, replace=False), rng.choice(9000, 1700, replace=False)])
    numbers = np.unique(np.where(numbers < 9000, 10000 + numbers * 9, numbers))
    numbers = rng.permutation(numbers)[: len(groups)]
    codes: list[str] = []
    names: list[str] = []
    for number, group in zip(numbers, groups, strict=True):
        for i, name in enumerate(group):
            codes.append(f"{number}{chr(65 + i)}" if len(group) > 1 else str(number))
            names.append(name)
    n = len(codes)
    trailing = np.zeros(n, dtype=bool)
    weight = 1.0 / (rng.permutation(n) + 100.0) ** 1.1
    pound = np.array(["£" in name for name in names])
    if pound.any():  # give the £1 sets a visible share of lines
        weight[pound] = 1.0 / (pound_ranks[: pound.sum()] + 100.0) ** 1.1
    order = rng.permutation(n)
    share = np.cumsum(weight[order]) / weight.sum()
    trailing[order[share <= 0.20]] = True
    furniture = [any(f in name for f in _FURNITURE) for name in names]
    cents = np.array([_base_price(rng, f) for f in furniture], dtype=np.int64)
    cents[["£" in name for name in names]] = 85
    lettered = [i for i, code in enumerate(codes) if code[-1].isalpha()]
    twins = rng.choice(lettered, size=len(lettered) // 5, replace=False) if lettered else []
    for i in twins:  # the same product keyed in lower case now and then
        codes.append(codes[i].lower())
        names.append(names[i])
        trailing = np.append(trailing, trailing[i])
        weight = np.append(weight, weight[i] * 0.1)
        cents = np.append(cents, cents[i])
    return _finish_products(rng, codes, names, trailing, weight, cents)


def _finish_products(
    rng: np.random.Generator,
    codes: list[str],
    names: list[str],
    trailing: np.ndarray,
    weight: np.ndarray,
    cents: np.ndarray,
) -> _Products:
    n = len(codes)
    texts: dict[str, int] = {}

    def text_id(text: str) -> int:
        return texts.setdefault(text, len(texts))

    shown = [name + " " if t else name for name, t in zip(names, trailing, strict=True)]
    main = np.array([text_id(s) for s in shown], dtype=np.int64)
    alt = main.copy()
    alt_from = np.full(n, 2.0)
    for i in rng.choice(n, size=max(1, n // 100), replace=False):
        variant = _variant_name(names[i], rng) + (" " if trailing[i] else "")
        alt[i], alt_from[i] = text_id(variant), rng.uniform(0.25, 0.85)
    raised = rng.random(n) < 0.15
    later = np.round(cents * rng.uniform(1.05, 1.3, n) / 5) * 5
    price_cents = np.stack([cents, np.where(raised, later, cents)], axis=1).astype(np.int64)
    price_from = np.where(raised, rng.uniform(0.1, 0.9, n), 2.0)
    pack = _pack_sizes(cents, rng)
    merch = n
    special = {}
    for code, desc, *_ in _SPECIALS:
        special[code] = len(codes)
        codes.append(code)
        main = np.append(main, text_id(desc))
    special[_ADJUST_CODE] = len(codes)
    codes.append(_ADJUST_CODE)
    main = np.append(main, text_id(_ADJUST_DESC))
    extra = len(codes) - n
    alt = np.concatenate([alt, main[n:]])
    alt_from = np.concatenate([alt_from, np.full(extra, 2.0)])
    price_cents = np.concatenate([price_cents, np.zeros((extra, 2), dtype=np.int64)])
    price_from = np.concatenate([price_from, np.full(extra, 2.0)])
    pack = np.concatenate([pack, np.ones(extra, dtype=pack.dtype)])
    notes = np.array([text_id(note) for note, _ in _WRITE_OFF_NOTES])
    rules = _price_rules()
    sale_w = np.array([s[2] for s in _SPECIALS])
    fee_w = np.array([s[3] for s in _SPECIALS])
    first = special[_SPECIALS[0][0]]
    return _Products(
        codes=codes,
        texts=list(texts),
        main=main,
        alt=alt,
        alt_from=alt_from,
        cents=price_cents,
        price_from=price_from,
        pack=pack.astype(np.int64),
        merch_cum=_cumulative(weight[:merch]),
        special=special,
        sale_special_cum=_cumulative(sale_w[sale_w > 0]),
        sale_special_ids=first + np.flatnonzero(sale_w > 0),
        fee_cum=_cumulative(fee_w[fee_w > 0]),
        fee_ids=first + np.flatnonzero(fee_w > 0),
        write_off_texts=notes,
        write_off_cum=_cumulative(np.array([w for _, w in _WRITE_OFF_NOTES])),
        empty_text=text_id(""),
        adjust=special[_ADJUST_CODE],
        rule_menu=rules[0],
        rule_cum=rules[1],
        rule_median=rules[2],
        rule_sigma=rules[3],
        first_special=first,
    )


def _pack_sizes(cents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Usual order unit per product: cheap things go by the dozen, dear ones singly."""
    pack = np.ones(len(cents), dtype=np.int64)
    band = np.searchsorted(np.array([_PACKS[i][0] for i in range(1, len(_PACKS))]), cents, side="right")
    for i, (_, sizes, weights) in enumerate(_PACKS):
        here = np.flatnonzero(band == i)
        pack[here] = rng.choice(np.array(sizes), size=here.size, p=np.array(weights) / sum(weights))
    return pack


def _price_rules() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    k = len(_SPECIALS)
    menu = np.zeros((k, 4), dtype=np.int64)
    cum = np.ones((k, 4))
    median = np.zeros(k)
    sigma = np.zeros(k)
    for i, (*_, rule) in enumerate(_SPECIALS):
        if rule[0] == "menu":
            prices, weights = rule[1], rule[2]
            menu[i, : len(prices)] = [round(p * 1000) for p in prices]
            cum[i, : len(prices)] = _cumulative(np.array(weights))
        else:
            median[i], sigma[i] = rule[1] * 1000, rule[2]
    return menu, cum, median, sigma


@dataclass
class _Customers:
    """Customers in the order the shop first sees them.

    The first `known` are regulars from before the window (the most active ones and the
    movers); the others are introduced one by one by "new customer" invoices, so every
    customer buys at least once and the customer base grows over the year.
    """

    ids: np.ndarray  # CustomerID per customer, in introduction order
    cum: np.ndarray  # cumulative activity, in introduction order
    home: np.ndarray  # country id
    moved_to: np.ndarray  # country id after the move (= home when none)
    moved_at: np.ndarray  # minute of the move (huge when none)
    known: int  # customers known from the first invoice on
    new_rate: float = 0.0  # chance that a customer order comes from a new customer

    @property
    def count(self) -> int:
        return len(self.ids)


def _customer_count(rows: int) -> int:
    return min(MAX_CUSTOMERS, max(10, rows // 120))


def _allocate_countries(n: int, rng: np.random.Generator) -> np.ndarray:
    """Country per customer: every listed country gets its share (at least one when room)."""
    weights = np.array([w for _, w in _COUNTRIES], dtype=np.float64)
    weights /= weights.sum()
    if n >= 200:
        counts = np.where(weights > 0, np.maximum(1, np.round(weights * n)), 0).astype(int)
        counts[0] = n - counts[1:].sum()
        return rng.permutation(np.repeat(np.arange(len(weights)), counts))
    return rng.choice(len(weights), size=n, p=weights)


def _movers(n: int, activity: np.ndarray, home: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Customers who move country once: busy foreign customers (indices, new countries)."""
    count = round(_SWITCH_SHARE * n)
    count = max(2, count) if n >= 500 else count
    if not count:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    ranked = np.argsort(-activity - np.where(home > 0, 1e6, 0.0), kind="stable")
    chosen = rng.choice(ranked[: 3 * count], count, replace=False)
    abroad = np.array([w for _, w in _COUNTRIES[1:]], dtype=np.float64)
    to = []
    for c in chosen:
        p = abroad.copy()
        if home[c] > 0:
            p[home[c] - 1] = 0.0
        to.append(1 + rng.choice(len(p), p=p / p.sum()))
    return chosen, np.array(to, dtype=np.int64)


def _build_customers(rows: int, rng: np.random.Generator, calendar: _Calendar) -> _Customers:
    n = _customer_count(rows)
    ids = np.sort(rng.choice(np.arange(CUSTOMER_ID_MIN, CUSTOMER_ID_MAX + 1), n, replace=False))
    home = _allocate_countries(n, rng)
    activity = rng.lognormal(0.0, 1.35, n) * np.where(home > 0, _FOREIGN_ACTIVITY, 1.0)
    movers, moved = _movers(n, activity, home, rng)
    moved_to, moved_at = home.copy(), np.full(n, np.iinfo(np.int64).max)
    moved_to[movers] = moved
    moved_at[movers] = calendar.minutes(rng.uniform(0.3, 0.7, len(movers)))
    known = max(1, round(0.25 * n))
    busy = np.argsort(-activity, kind="stable")
    first = np.concatenate([movers, busy[~np.isin(busy, movers)]])[:known]
    rest = rng.permutation(np.setdiff1d(np.arange(n), first))
    order = np.concatenate([first, rest])
    return _Customers(
        ids[order],
        _cumulative(activity[order]),
        home[order],
        moved_to[order],
        moved_at[order],
        known,
    )


# ---------------------------------------------------------------------------------------------
# The model: catalogue + distributions, and how one invoice / line is derived.


@dataclass
class _Context:
    """Per-line facts about the invoice a sale line belongs to."""

    anon: np.ndarray  # no customer
    home_uk: np.ndarray  # the customer's home country is the home market
    pos: np.ndarray  # invoice start as a fraction of the file (drives catalogue changes)
    lines: np.ndarray  # drawn size of the invoice


@dataclass
class _Lines:
    """Content of a set of lines (parallel arrays)."""

    product: np.ndarray
    text: np.ndarray
    qty: np.ndarray
    mills: np.ndarray


class _Model:
    """Everything fixed for one run; derives invoices and lines from their keys."""

    def __init__(self, seed: int, start: date, days: int, rows: int) -> None:
        self.rows = rows
        self.hash = _Hasher(seed)
        self.calendar = _Calendar(start, days, np.random.default_rng([seed & _MASK64, 3]))
        self.products = _build_products(np.random.default_rng([seed & _MASK64, 1]))
        cust_rng = np.random.default_rng([seed & _MASK64, 2])
        self.customers = _build_customers(rows, cust_rng, self.calendar)
        self.countries = [name for name, _ in _COUNTRIES]
        self.anon_country_cum = _cumulative(np.array([w for _, w in _ANON_COUNTRIES]))
        self.anon_country_ids = np.array([self.countries.index(name) for name, _ in _ANON_COUNTRIES])
        self._distributions()

    def _distributions(self) -> None:
        sale = _lognormal_sizes(15, 0.93, _MAX_LINES)
        anon = 0.55 * _lognormal_sizes(60, 1.0, _MAX_LINES)
        anon[:3] += 0.45 * np.array([0.6, 0.28, 0.12])
        cancel = 0.42 * 0.58 ** np.arange(60)
        cancel /= cancel.sum()
        self.size_cum = {_SALE: _cumulative(sale), _ANON: _cumulative(anon)}
        self.size_cum[_CANCEL] = _cumulative(cancel)
        refund = 0.0  # expected lines of a refund: E[min(cancel size, order size)]
        for g, pg in enumerate(cancel, start=1):
            refund += pg * float((np.minimum(g, np.arange(1, _MAX_LINES + 1)) * sale).sum())
        refund = (1 - _P_CANCEL_FEE) * refund + _P_CANCEL_FEE
        shares = np.array(
            [
                1 - _SHARE_ANON - _SHARE_CANCEL - _SHARE_WRITE_OFF,
                _SHARE_ANON,
                _SHARE_CANCEL,
                _SHARE_WRITE_OFF,
            ]
        )
        means = np.array([_mean(sale), _mean(anon), refund, 1.0])
        kind_p = shares / means
        kind_p /= kind_p.sum()
        kind_p[_CANCEL] /= 1 - (1 - kind_p[_SALE]) ** 4  # refunds without an order are sales
        kind_p /= kind_p.sum()
        self.kind_cum = _cumulative(kind_p)
        orders = self.rows / float((kind_p * means).sum()) * kind_p[_SALE]
        cs = self.customers
        cs.new_rate = min(1.0, 1.05 * (cs.count - cs.known) / max(orders, 1.0))
        self.mult_cum = _cumulative(np.array([0.62, 0.17, 0.06, 0.05, 0.02, 0.02, 0.015, 0.015, 0.01, 0.005, 0.005]))
        self.mult = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20])
        self.anon_qty_cum = _cumulative(_lognormal_sizes(1.2, 1.2, 200))
        self.write_off_qty_cum = _cumulative(_lognormal_sizes(6, 1.4, 3000))
        self.post_qty_cum = _cumulative(np.array([0.75, 0.15, 0.07, 0.03]))

    # -- invoices --------------------------------------------------------------------------

    def kinds(self, keys: np.ndarray) -> np.ndarray:
        """Invoice kind as drawn (before refunds without an order become sales)."""
        return _pick(self.kind_cum, self.hash.unit(keys, "kind"))

    def sale_size(self, keys: np.ndarray) -> np.ndarray:
        return _pick(self.size_cum[_SALE], self.hash.unit(keys, "size")) + 1

    def customers_of(self, keys: np.ndarray, known: int) -> tuple[np.ndarray, int]:
        """Customer of each customer order `keys` (in order), given `known` customers so far.

        Returns the customers (positions in introduction order) and the new `known`.
        """
        cs = self.customers
        u_new, u_pick = self.hash.pair(keys, "customer")
        new = u_new < cs.new_rate
        seen = known + np.cumsum(new)
        new &= seen <= cs.count
        seen = np.minimum(seen, cs.count)
        regular = _pick(cs.cum, u_pick * cs.cum[seen - 1])
        known_after = int(seen[-1]) if len(seen) else known
        return np.where(new, seen - 1, regular), known_after

    def shape(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Kind, size and refunded invoice (-1 when none) of invoices `keys`."""
        kind = self.kinds(keys)
        u = self.hash.unit(keys, "size")
        size = np.ones(len(keys), dtype=np.int64)
        for k in (_SALE, _ANON, _CANCEL):
            m = kind == k
            size[m] = _pick(self.size_cum[k], u[m]) + 1
        ref = np.full(len(keys), -1, dtype=np.int64)
        c = np.flatnonzero(kind == _CANCEL)
        if c.size:
            found, target = self._refunded(keys[c])
            kind[c[~found]] = _SALE
            size[c[~found]] = _pick(self.size_cum[_SALE], u[c[~found]]) + 1
            ok = c[found]
            ref[ok] = target[found]
            fee = self.hash.unit(keys[ok], "cancel") < _P_CANCEL_FEE
            ordered = self.sale_size(ref[ok].astype(np.uint64))
            size[ok] = np.where(fee, 1, np.minimum(size[ok], ordered))
        return kind, size, ref

    def _refunded(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For refund invoices: the earlier customer order each one refunds."""
        h = self.hash.bits(keys, "ref")
        cand = np.stack(
            [keys.astype(np.int64) - 1 - ((h >> np.uint64(16 * i)) & np.uint64(0xFFFF)).astype(np.int64) % _REF_WINDOW for i in range(4)]
        )
        valid = cand >= 0
        valid &= self.kinds(np.maximum(cand, 0).astype(np.uint64)) == _SALE
        first = valid.argmax(axis=0)
        cols = np.arange(len(keys))
        return valid.any(axis=0), cand[first, cols]

    def country(self, keys: np.ndarray, cust: np.ndarray, minute: np.ndarray) -> np.ndarray:
        """Country per invoice: the customer's (as of the invoice time) or an anonymous one."""
        anon = self.anon_country_ids[_pick(self.anon_country_cum, self.hash.unit(keys, "anon_country"))]
        c = np.maximum(cust, 0)
        cs = self.customers
        own = np.where(minute >= cs.moved_at[c], cs.moved_to[c], cs.home[c])
        return np.where(cust >= 0, own, anon)

    # -- lines -----------------------------------------------------------------------------

    def follow(self, inv: np.ndarray, line: np.ndarray, reorders: bool) -> np.ndarray:
        """Line whose item (or, without `reorders`, whose quantity too) a customer line repeats.

        A planted repeat copies an earlier line of its invoice exactly; a re-order line takes an
        earlier line's item with a quantity of its own. Chains are followed to the end.
        """
        limit = _P_DUPLICATE + (_P_REORDER if reorders else 0.0)
        cur = line.copy()
        todo = np.arange(len(line))
        while todo.size:
            j = cur[todo]
            keys = (inv[todo] << np.uint64(_LINE_BITS)) | j.astype(np.uint64)
            u_dup, u_src = self.hash.pair(keys, "dup")
            again = (j > 0) & (u_dup < limit)
            todo = todo[again]
            cur[todo] = (u_src[again] * j[again]).astype(np.int64)
        return cur

    def sale_lines(self, inv: np.ndarray, line: np.ndarray, ctx: _Context) -> _Lines:
        """Content of sale lines `line` of invoices `inv` (one entry per line)."""
        pr = self.products
        item_line, qty_line = line, line
        if (~ctx.anon).any():  # repeats are planted in customer orders only
            cust = np.flatnonzero(~ctx.anon)
            item_line, qty_line = line.copy(), line.copy()
            item_line[cust] = self.follow(inv[cust], line[cust], reorders=True)
            qty_line[cust] = self.follow(inv[cust], line[cust], reorders=False)
        keys = (inv << np.uint64(_LINE_BITS)) | item_line.astype(np.uint64)
        u_slot, u_extra = self.hash.pair(keys, "product")
        u_zero, u_price = self.hash.pair(keys, "extra")
        # Stratified over the popularity curve: an invoice rarely lists a product twice.
        u_prod = (self.hash.unit(inv, "basket") + (item_line + u_slot) / ctx.lines) % 1.0
        product = _pick(pr.merch_cum, u_prod)
        special = u_extra < _P_SPECIAL
        sid = pr.sale_special_ids[_pick(pr.sale_special_cum, u_extra / _P_SPECIAL)]
        product = np.where(special, sid, product)
        product[(u_extra >= _P_SPECIAL) & (u_extra < _P_SPECIAL + _P_PADS)] = pr.special["PADS"]
        u_post = self.hash.unit(inv, "post")
        first = item_line == 0
        post = first & ~ctx.anon & (u_post < np.where(ctx.home_uk, _P_POST_HOME, _P_POST_ABROAD))
        product[post] = pr.special["POST"]
        product[first & ctx.anon & (u_post < _P_DOT)] = pr.special["DOT"]
        merch = product < pr.first_special
        text = np.where(ctx.pos >= pr.alt_from[product], pr.alt[product], pr.main[product])
        qty_keys = (inv << np.uint64(_LINE_BITS)) | qty_line.astype(np.uint64)
        qty = self._sale_qty(product, merch, ctx.anon, *self.hash.pair(qty_keys, "qty"))
        mills = self._merch_mills(product, ctx.anon, qty, ctx.pos)
        other = ~merch
        mills[other] = self.special_mills(product[other], u_price[other], u_zero[other])
        zero = merch & ctx.anon & (u_zero < _P_EMPTY_DESC + _P_FREE)
        mills[zero] = 0
        text[zero & (u_zero < _P_EMPTY_DESC)] = pr.empty_text
        return _Lines(product, text, qty, mills)

    def _sale_qty(self, product: np.ndarray, merch: np.ndarray, anon: np.ndarray, u_qty: np.ndarray, u_huge: np.ndarray) -> np.ndarray:
        """Wholesale quantities go by pack sizes; anonymous buyers take one or two."""
        pr = self.products
        wholesale = pr.pack[product] * self.mult[_pick(self.mult_cum, u_qty)]
        huge = (u_huge < _P_HUGE) & merch & ~anon
        wholesale = np.where(huge, 1000 * (1 + (u_qty * 12).astype(np.int64)), wholesale)
        qty = np.where(anon, _pick(self.anon_qty_cum, u_qty) + 1, wholesale)
        post = product == pr.special["POST"]
        qty = np.where(post, _pick(self.post_qty_cum, u_qty) + 1, qty)
        return np.where(merch | post, qty, 1).astype(np.int64)

    def _merch_mills(self, product: np.ndarray, anon: np.ndarray, qty: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """List price as of `pos`, marked up for anonymous buyers, discounted for bulk."""
        pr = self.products
        later = (pos >= pr.price_from[product]).astype(np.int64)
        cents = pr.cents[product, later].astype(np.float64)
        factor = np.where(anon, 1.62, np.where(qty >= 100, 0.75, np.where(qty >= 24, 0.85, 1.0)))
        return np.rint(cents * factor).astype(np.int64) * 10

    def special_mills(self, product: np.ndarray, u1: np.ndarray, u2: np.ndarray) -> np.ndarray:
        """Prices of non-merchandise lines in thousandths of a pound."""
        pr = self.products
        i = np.clip(product - pr.first_special, 0, len(_SPECIALS) - 1)
        choice = np.minimum((u1[:, None] >= pr.rule_cum[i]).sum(axis=1), 3)
        menu = pr.rule_menu[i, choice]
        z = np.sqrt(-2.0 * np.log1p(-u1)) * np.cos(2.0 * np.pi * u2)
        drawn = np.rint(pr.rule_median[i] * np.exp(pr.rule_sigma[i] * z) / 10) * 10
        return np.where(pr.rule_median[i] > 0, np.maximum(drawn, 10), menu).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# Streaming: plan a batch of invoices, derive its lines, render, write.


@dataclass
class _State:
    next_invoice: int = 0
    next_row: int = 0
    adjust_done: int = 0
    known: int = 0  # customers introduced so far
    history_start: np.ndarray | None = None  # start rows of the last _REF_WINDOW invoices
    history_cust: np.ndarray | None = None  # and their customers (-1 when none)


@dataclass
class _Batch:
    keys: np.ndarray  # invoice numbers (counter, uint64)
    kind: np.ndarray
    size: np.ndarray  # lines written
    drawn: np.ndarray  # lines drawn (differs from size only for the very last invoice)
    start: np.ndarray
    ref: np.ndarray
    adjust_no: np.ndarray  # ordinal of the adjustment (-1 when not one)


def _adjust_targets(rows: int) -> np.ndarray:
    count = round(rows / _ADJUST_EVERY)
    if rows >= 100_000:
        count = max(1, count)
    return (rows * (np.arange(count) + 0.5) / max(count, 1)).astype(np.int64)


def _plan(model: _Model, state: _State, batch_rows: int, targets: np.ndarray) -> _Batch:
    """The next invoices, about `batch_rows` lines, cut to the total row count."""
    m = batch_rows // 12 + 16  # candidates: ~1.8x the expected need
    keys = np.arange(state.next_invoice, state.next_invoice + m, dtype=np.uint64)
    kind, size, ref = model.shape(keys)
    start = state.next_row + np.cumsum(size) - size
    adjust_no = np.full(m, -1, dtype=np.int64)
    for a in range(state.adjust_done, len(targets)):  # an anonymous order becomes a bad-debt line
        hit = np.flatnonzero((kind == _ANON) & (start >= targets[a]))
        if not hit.size:
            break
        i = hit[0]
        start[i + 1 :] -= size[i] - 1
        kind[i], size[i], adjust_no[i] = _ADJUST, 1, a
    end = start + size
    limit = min(state.next_row + batch_rows, model.rows)
    n = int(np.searchsorted(end, limit, side="right"))
    if n < m and (n == 0 or (limit == model.rows and end[n - 1] < limit)):
        n += 1
    drawn = size[:n]
    size = drawn.copy()
    size[-1] = min(size[-1], model.rows - start[n - 1])
    return _Batch(keys[:n], kind[:n], size, drawn, start[:n], ref[:n], adjust_no[:n])


def _advance(state: _State, batch: _Batch, cust: np.ndarray) -> None:
    state.next_invoice += len(batch.keys)
    state.next_row = int(batch.start[-1] + batch.size[-1])
    done = batch.adjust_no[batch.adjust_no >= 0]
    if done.size:
        state.adjust_done = int(done.max()) + 1
    state.history_start = _recent(state.history_start, batch.start)
    state.history_cust = _recent(state.history_cust, cust)


def _recent(history: np.ndarray | None, latest: np.ndarray) -> np.ndarray:
    both = latest if history is None else np.concatenate([history, latest])
    return both[-_REF_WINDOW:].copy()


def _recall(state: _State, history: np.ndarray | None, current: np.ndarray, invoice: np.ndarray) -> np.ndarray:
    """A per-invoice value of earlier invoices (this batch or the carried history)."""
    hist = current[:0] if history is None else history
    first = state.next_invoice - len(hist)
    return np.concatenate([hist, current])[invoice - first]


@dataclass
class _Rows:
    """One batch, line by line, plus the per-invoice fields."""

    inv_index: np.ndarray  # row -> invoice position in the batch
    lines: _Lines
    minute: np.ndarray  # per invoice
    cust: np.ndarray  # per invoice, -1 when anonymous
    country: np.ndarray  # per invoice


def _derive(model: _Model, state: _State, batch: _Batch) -> _Rows:
    """All lines of a planned batch (updates the count of known customers)."""
    n = len(batch.keys)
    rows = int(batch.size.sum())
    inv_index = np.repeat(np.arange(n), batch.size)
    line = np.arange(rows) - np.repeat(np.cumsum(batch.size) - batch.size, batch.size)
    jitter = model.hash.unit(batch.keys, "jitter")
    minute = model.calendar.minutes((batch.start + jitter * batch.size) / model.rows)
    cust = np.full(n, -1, dtype=np.int64)
    orders = batch.kind == _SALE
    cust[orders], state.known = model.customers_of(batch.keys[orders], state.known)
    refunds = np.flatnonzero(batch.kind == _CANCEL)
    cust[refunds] = _recall(state, state.history_cust, cust, batch.ref[refunds])
    country = model.country(batch.keys, cust, minute)
    country[(batch.kind == _WRITE_OFF) | (batch.kind == _ADJUST)] = 0
    lines = _Lines(*(np.zeros(rows, dtype=np.int64) for _ in range(4)))
    kind = batch.kind[inv_index]
    _fill_sales(model, batch, cust, inv_index, line, kind, lines)
    _fill_refunds(model, state, batch, cust, inv_index, line, kind, lines)
    _fill_single(model, batch, inv_index, kind, lines)
    return _Rows(inv_index, lines, minute, cust, country)


def _put(lines: _Lines, at: np.ndarray, part: _Lines) -> None:
    lines.product[at], lines.text[at] = part.product, part.text
    lines.qty[at], lines.mills[at] = part.qty, part.mills


def _fill_sales(
    model: _Model, batch: _Batch, cust: np.ndarray, inv_index: np.ndarray, line: np.ndarray, kind: np.ndarray, lines: _Lines
) -> None:
    """Lines of customer and anonymous orders."""
    at = np.flatnonzero((kind == _SALE) | (kind == _ANON))
    if not at.size:
        return
    ii = inv_index[at]
    ctx = _Context(
        anon=kind[at] == _ANON,
        home_uk=model.customers.home[np.maximum(cust[ii], 0)] == 0,
        pos=batch.start[ii] / model.rows,
        lines=batch.drawn[ii],
    )
    _put(lines, at, model.sale_lines(batch.keys[ii], line[at], ctx))


def _fill_refunds(
    model: _Model,
    state: _State,
    batch: _Batch,
    cust: np.ndarray,
    inv_index: np.ndarray,
    line: np.ndarray,
    kind: np.ndarray,
    lines: _Lines,
) -> None:
    """Refund lines: earlier lines of the customer's order, quantity negated (some partly)."""
    at = np.flatnonzero(kind == _CANCEL)
    if not at.size:
        return
    ii = inv_index[at]
    keys = batch.keys[ii]
    order = batch.ref[ii]
    order_keys = order.astype(np.uint64)
    order_size = model.sale_size(order_keys)
    offset = (model.hash.unit(keys, "cancel") * 997).astype(np.int64)
    ctx = _Context(
        anon=np.zeros(at.size, dtype=bool),
        home_uk=model.customers.home[cust[ii]] == 0,
        pos=_recall(state, state.history_start, batch.start, order) / model.rows,
        lines=order_size,
    )
    part = model.sale_lines(order_keys, (offset + line[at]) % order_size, ctx)
    row_keys = (keys << np.uint64(_LINE_BITS)) | line[at].astype(np.uint64)
    u_full, u_part = model.hash.pair(row_keys, "cancel_qty")
    partial = 1 + (u_part * part.qty).astype(np.int64)
    part.qty = -np.where(u_full < 0.8, part.qty, np.minimum(partial, part.qty))
    _put(lines, at, part)
    _fill_fees(model, keys, at, lines)


def _fill_fees(model: _Model, keys: np.ndarray, at: np.ndarray, lines: _Lines) -> None:
    """Refund invoices that return a fee or discount: one line, code from the fee list."""
    u_fee = model.hash.unit(keys, "cancel")
    fee = u_fee < _P_CANCEL_FEE
    if not fee.any():
        return
    pr = model.products
    u1, u2 = model.hash.pair(keys[fee], "fee")
    product = pr.fee_ids[_pick(pr.fee_cum, u_fee[fee] / _P_CANCEL_FEE)]
    mills = model.special_mills(product, u1, u2)
    qty = np.full(product.size, -1, dtype=np.int64)
    _put(lines, at[fee], _Lines(product, pr.main[product], qty, mills))


def _fill_single(model: _Model, batch: _Batch, inv_index: np.ndarray, kind: np.ndarray, lines: _Lines) -> None:
    """Write-offs and bad-debt adjustments (one line each)."""
    pr = model.products
    at = np.flatnonzero(kind == _WRITE_OFF)
    if at.size:
        keys = batch.keys[inv_index[at]]
        u1, u2 = model.hash.pair(keys, "write_off")
        u3, _ = model.hash.pair(keys, "write_off_qty")
        product = _pick(pr.merch_cum, u1)
        text = pr.write_off_texts[_pick(pr.write_off_cum, u2)]
        qty = -(_pick(model.write_off_qty_cum, u3) + 1)
        _put(lines, at, _Lines(product, text, qty, np.zeros(at.size, dtype=np.int64)))
    at = np.flatnonzero(kind == _ADJUST)
    if at.size:
        ordinal = batch.adjust_no[inv_index[at]]
        amount = _adjust_amount(model, np.where(ordinal == 1, 0, ordinal))
        mills = np.where(ordinal == 1, -amount, amount)
        product = np.full(at.size, pr.adjust)
        _put(lines, at, _Lines(product, pr.main[product], np.ones(at.size, np.int64), mills))


def _adjust_amount(model: _Model, ordinal: np.ndarray) -> np.ndarray:
    """Bad-debt amounts: the second adjustment reverses the first."""
    u = model.hash.unit(ordinal.astype(np.uint64), "adjust")
    return (100_000 + (u * 1_900_000).astype(np.int64)) * 10


# ---------------------------------------------------------------------------------------------
# Rendering.


def _format_mills(values: np.ndarray) -> list[str]:
    out = []
    for v in values.tolist():
        sign, v = ("-", -v) if v < 0 else ("", v)
        whole, frac = divmod(v, 1000)
        out.append(f"{sign}{whole}" if not frac else f"{sign}{whole}.{frac:03d}".rstrip("0"))
    return out


class _Renderer:
    """Lookup tables of pre-escaped CSV fields."""

    def __init__(self, model: _Model) -> None:
        pr = model.products
        self.codes = pa.array([_csv_field(c) for c in pr.codes])
        self.texts = pa.array([_csv_field(t) for t in pr.texts])
        ids = [str(i) for i in model.customers.ids.tolist()]
        self.customers = pa.array([*ids, ""])
        self.countries = pa.array([_csv_field(c) + "\n" for c in model.countries])
        self.prefix = pa.array(["", "", "C", "", "A"])
        self.calendar = model.calendar

    def invoice_fields(self, batch: _Batch, rows: _Rows) -> tuple[pa.Array, pa.Array, pa.Array]:
        numbers = pc.cast(pa.array(batch.keys.astype(np.int64) + FIRST_INVOICE), pa.string())
        invoice = pc.binary_join_element_wise(self.prefix.take(batch.kind), numbers, "")
        minutes, back = np.unique(rows.minute, return_inverse=True)
        stamp = self.calendar.render(minutes).take(back)
        cust = np.where(rows.cust >= 0, rows.cust, len(self.customers) - 1)
        tail = pc.binary_join_element_wise(self.customers.take(cust), self.countries.take(rows.country), ",")
        return invoice, stamp, tail

    def lines(self, batch: _Batch, rows: _Rows) -> Iterator[pa.Buffer]:
        """The batch's lines as CSV bytes, in file order."""
        fields = self.invoice_fields(batch, rows)
        total = len(rows.inv_index)
        for lo in range(0, total, _RENDER_SLICE):
            yield _string_bytes(self._join(fields, rows, slice(lo, min(total, lo + _RENDER_SLICE))))

    def runs(self, batch: _Batch, rows: _Rows, group: np.ndarray) -> Iterator[tuple[int, pa.Buffer, int]]:
        """(group, CSV bytes, row count) pieces of the batch: each group's lines in file order.

        `group` is a per-row file key; rows are stably sorted by it (a no-op when the keys
        already ascend, as days do), so a group's lines keep their order in the single file.
        """
        fields = self.invoice_fields(batch, rows)
        total = len(group)
        order = None if bool((group[1:] >= group[:-1]).all()) else np.argsort(group, kind="stable")
        for lo in range(0, total, _RENDER_SLICE):
            sl = slice(lo, min(total, lo + _RENDER_SLICE))
            idx = sl if order is None else order[sl]
            keys = group[idx]
            bounds = np.concatenate([[0], np.flatnonzero(keys[1:] != keys[:-1]) + 1, [len(keys)]])
            pieces = _string_pieces(self._join(fields, rows, idx), bounds)
            for (a, b), piece in zip(itertools.pairwise(bounds.tolist()), pieces, strict=True):
                yield int(keys[a]), piece, b - a

    def _join(self, fields: tuple[pa.Array, pa.Array, pa.Array], rows: _Rows, idx: slice | np.ndarray) -> pa.Array:
        """One CSV line per selected row (a slice, or row positions in the order wanted)."""
        invoice, stamp, tail = fields
        ii = rows.inv_index[idx]
        ln = rows.lines
        prices, back = np.unique(ln.mills[idx], return_inverse=True)
        return pc.binary_join_element_wise(
            invoice.take(ii),
            self.codes.take(ln.product[idx]),
            self.texts.take(ln.text[idx]),
            pc.cast(pa.array(ln.qty[idx]), pa.string()),
            stamp.take(ii),
            pa.array(_format_mills(prices)).take(back),
            tail.take(ii),
            ",",
        )


def _string_bytes(arr: pa.Array) -> pa.Buffer:
    """The characters of a (null-free) string array, back to back."""
    return _string_pieces(arr, np.array([0, len(arr)]))[0]


def _string_pieces(arr: pa.Array, bounds: np.ndarray) -> list[pa.Buffer]:
    """The characters of strings bounds[i]..bounds[i+1] of a (null-free) string array, per i."""
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset : arr.offset + len(arr) + 1]
    at = offsets[bounds].tolist()
    data = arr.buffers()[2]
    return [data.slice(a, b - a) for a, b in itertools.pairwise(at)]


def _count_repeats(rows: _Rows) -> int:
    """Rows repeating an earlier row in all fields (only possible inside one invoice)."""
    ln = rows.lines
    frame = pd.DataFrame({"i": rows.inv_index, "p": ln.product, "t": ln.text, "q": ln.qty, "m": ln.mills})
    return int(frame.duplicated().sum())


@contextmanager
def _open_sink(path: Path, compress: bool) -> Iterator[BinaryIO]:
    """A binary file, gzip-compressed (no name, zero mtime: reproducible) when asked."""
    with open(path, "wb", buffering=1 << 20) as raw:
        if not compress:
            yield raw
            return
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=4, mtime=0) as gz:
            yield gz


def _validate(rows: int, days: int, batch_rows: int) -> None:
    if rows < 0:
        raise ValueError(f"rows must be 0 or more, got {rows}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")


def _batches(model: _Model, batch_rows: int) -> Iterator[tuple[_Batch, _Rows]]:
    """All rows of the extract, a batch of whole invoices at a time, in file order."""
    targets = _adjust_targets(model.rows)
    state = _State(known=model.customers.known)
    while state.next_row < model.rows:
        batch = _plan(model, state, batch_rows, targets)
        rows = _derive(model, state, batch)
        yield batch, rows
        _advance(state, batch, rows.cust)


@dataclass
class _Tally:
    """Counts over the batches written so far (customers seen: one flag per customer)."""

    seen: np.ndarray
    invoices: int = 0
    repeats: int = 0

    def add(self, batch: _Batch, rows: _Rows) -> None:
        self.invoices += len(batch.keys)
        self.repeats += _count_repeats(rows)
        self.seen[rows.cust[rows.cust >= 0]] = True

    def result(self, path: Path, rows: int, began: float, files: int, size: int) -> GenerateResult:
        seconds = time.perf_counter() - began
        return GenerateResult(path, rows, self.invoices, int(self.seen.sum()), self.repeats, seconds, files, size)


def generate_sales(
    output: Path,
    rows: int,
    seed: int = 42,
    start: date = date(2010, 12, 1),
    days: int = 374,
    batch_rows: int = 50_000,
) -> GenerateResult:
    """Write a synthetic Online Retail extract of exactly `rows` lines to `output`.

    CSV (gzip when the name ends in ``.gz``), header first, lines in time order, dates from
    `start` over `days` days. The same arguments give the same bytes. Raises ValueError for
    a negative row count, a non-positive `days` / `batch_rows`, or an `output` that is a folder.
    """
    _validate(rows, days, batch_rows)
    output = Path(output)
    if output.is_dir():
        raise ValueError("it is a folder; name a file, or pass --split day|store to write a folder")
    began = time.perf_counter()
    output.parent.mkdir(parents=True, exist_ok=True)
    model = _Model(seed, start, days, rows)
    renderer = _Renderer(model)
    tally = _Tally(np.zeros(len(model.customers.ids), dtype=bool))
    partial = output.with_name(output.name + ".part")
    try:
        with _open_sink(partial, output.name.endswith(".gz")) as sink:
            sink.write((",".join(SOURCE_COLUMNS) + "\n").encode())
            for batch, lines in _batches(model, batch_rows):
                for chunk in renderer.lines(batch, lines):
                    sink.write(chunk)
                tally.add(batch, lines)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    result = tally.result(output, rows, began, 1, output.stat().st_size)
    logger.info(
        "generated %d rows, %d invoices, %d customers in %.1fs to %s",
        rows,
        result.invoices,
        result.customers,
        result.seconds,
        output,
    )
    return result


# ---------------------------------------------------------------------------------------------
# Folder mode: the same rows, one CSV per trading day or per store.

SPLITS = ("day", "store")
MANIFEST_NAME = "_manifest.json"  # not an extract suffix: `etl --source DIR` leaves it alone
_GENERATED = re.compile(r"sales-[^/]*\.csv")  # names a generated folder may hold (plus the manifest)


def _day_keys(model: _Model, batch: _Batch, rows: _Rows) -> np.ndarray:
    """Per row: the day since `start` (rows arrive in time order, so days ascend)."""
    return (rows.minute // 1440)[rows.inv_index]


def _store_keys(model: _Model, batch: _Batch, rows: _Rows, stores: int) -> np.ndarray:
    """Per row: store 1..stores, from the CustomerID when there is one, else the invoice number.

    A customer always buys at the same store, so a refund lands where its order did; sales
    without a customer, write-offs and adjustments go round the stores by invoice number.
    """
    number = np.where(rows.cust >= 0, model.customers.ids[np.maximum(rows.cust, 0)], batch.keys.astype(np.int64) + FIRST_INVOICE)
    return (1 + number % stores)[rows.inv_index]


@dataclass
class _OpenFile:
    name: str
    handle: BinaryIO
    digest: hashlib._Hash
    rows: int = 0
    bytes: int = 0


class _FolderWriter:
    """One CSV per file key under `folder`, each with the header; at most `max_open` open.

    A file is closed when `max_open` others are open and a new key
    arrives; a key never comes back after its file was closed (days arrive in order, every
    store stays open), which is checked.
    """

    def __init__(self, folder: Path, name_of: Callable[[int], str], max_open: int) -> None:
        self.folder, self.name_of, self.max_open = folder, name_of, max_open
        self.header = (",".join(SOURCE_COLUMNS) + "\n").encode()
        self.open: dict[int, _OpenFile] = {}
        self.closed: set[int] = set()
        self.done: list[dict] = []

    def write(self, key: int, data: pa.Buffer, rows: int) -> None:
        part = self.open.get(key) or self._start(key)
        part.handle.write(data)
        part.digest.update(data)
        part.rows += rows
        part.bytes += data.size

    def _start(self, key: int) -> _OpenFile:
        if key in self.closed:
            raise RuntimeError(f"rows for {self.name_of(key)} arrived after the file was closed")
        if len(self.open) >= self.max_open:
            self._finish(next(iter(self.open)))
        name = self.name_of(key)
        handle = open(self.folder / name, "wb", buffering=1 << 16)  # noqa: SIM115 - closed by _finish or abandon
        part = _OpenFile(name, handle, hashlib.sha256(self.header))
        part.handle.write(self.header)
        part.bytes = len(self.header)
        self.open[key] = part
        return part

    def _finish(self, key: int) -> None:
        part = self.open.pop(key)
        part.handle.close()
        self.closed.add(key)
        self.done.append({"name": part.name, "rows": part.rows, "bytes": part.bytes, "sha256": part.digest.hexdigest()})

    def finish(self) -> list[dict]:
        """Close every file and wait until all are on disk; the files written, in name order.

        Syncing once at the end, not as each file closes, lets the kernel write early files
        in the background while later ones are generated (per-file syncs cost ~70 % more time).
        """
        for key in list(self.open):
            self._finish(key)
        for part in self.done:
            _fsync_path(self.folder / part["name"])
        return sorted(self.done, key=lambda f: f["name"])

    def abandon(self) -> None:
        for part in self.open.values():
            part.handle.close()
        self.open.clear()


def _check_folder(folder: Path, overwrite: bool) -> None:
    """Refuse before writing anything: a file in the way, a folder not ours to replace."""
    if folder.exists() and not folder.is_dir():
        raise ValueError("it is a file, not a folder; name a new or empty folder (or drop --split to write one file)")
    if not folder.is_dir():
        return
    entries = sorted(folder.iterdir())
    if entries and not overwrite:
        raise ValueError("the folder is not empty; pass --overwrite to replace it, or name a new or empty folder")
    foreign = [e.name for e in entries if not (e.is_file() and (e.name == MANIFEST_NAME or _GENERATED.fullmatch(e.name)))]
    if foreign:
        raise ValueError(f"the folder holds {foreign[0]!r}, which data generate did not write; --overwrite only replaces generated folders")


def _publish(staging: Path, folder: Path) -> None:
    """Put the finished folder in place: a reader sees the old folder, or the new one whole."""
    old = folder.with_name(f"{folder.name}.old-{os.getpid()}") if folder.exists() else None
    if old is not None:
        os.replace(folder, old)
    try:
        os.replace(staging, folder)
    except BaseException:
        if old is not None:
            os.replace(old, folder)
        raise
    _fsync_path(folder.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _fsync_path(path: Path) -> None:
    """Wait until a file's (or a folder's entries') bytes are on disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sweep_leftovers(folder: Path) -> None:
    """Remove the staging (or replaced) folders of earlier runs to `folder` that were killed."""
    for path in folder.parent.glob(f"{glob.escape(folder.name)}.*-*"):
        kind, _, pid = path.name[len(folder.name) + 1 :].partition("-")
        if kind in ("partial", "old") and pid.isdigit() and path.is_dir() and not _running(int(pid)):
            logger.warning("removing %s, left by a generator run that was killed", path)
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def _layout(split: str, stores: int, start: date) -> tuple[Callable, Callable[[int], str], int]:
    """How rows map to files: per-row file keys of a batch, a key's file name, files open at once."""
    if split == "day":
        return _day_keys, lambda key: f"sales-{start + timedelta(days=key):%Y-%m-%d}.csv", 1
    width = max(2, len(str(stores)))
    return functools.partial(_store_keys, stores=stores), lambda key: f"sales-store-{key:0{width}d}.csv", stores


def generate_folder(
    output: Path,
    rows: int,
    seed: int = 42,
    split: str = "day",
    stores: int = 10,
    start: date = date(2010, 12, 1),
    days: int = 374,
    batch_rows: int = 50_000,
    overwrite: bool = False,
) -> GenerateResult:
    """Write the rows `generate_sales` would write as a folder of CSVs, one per day or per store.

    Same arguments, same rows: each file holds its day's (or store's) lines of the single
    file, in the same order, after the header. Days are ``sales-YYYY-MM-DD.csv`` (days without
    trade get no file), stores ``sales-store-NN.csv`` (see `_store_keys`). The folder is built
    under ``OUTPUT.partial-PID`` beside `output` and renamed into place when complete, with
    ``_manifest.json`` (files, row counts, bytes, SHA-256) written last; a run that fails
    leaves `output` as it was. With `overwrite`, an existing folder is replaced only if it
    holds nothing but generated files. Raises ValueError for bad arguments or targets.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if stores < 1:
        raise ValueError(f"stores must be at least 1, got {stores}")
    if rows < 1:
        raise ValueError(f"a folder needs at least 1 row, got {rows}")
    _validate(rows, days, batch_rows)
    folder = Path(output).absolute()
    _check_folder(folder, overwrite)
    began = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(folder)
    staging = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    staging.mkdir()
    keys_of, name_of, max_open = _layout(split, stores, start)
    writer = _FolderWriter(staging, name_of, max_open)
    try:
        tally = _write_runs(_Model(seed, start, days, rows), batch_rows, keys_of, writer)
        files = writer.finish()
        about = {"rows": rows, "seed": seed, "split": split, "stores": stores if split == "store" else None}
        size = _write_manifest(staging, {**about, "start": start.isoformat(), "days": days}, files)
        _publish(staging, folder)
    except BaseException:
        writer.abandon()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result = tally.result(Path(output), rows, began, len(files), size)
    logger.info("generated %d rows in %d files (%s) in %.1fs to %s", rows, len(files), split, result.seconds, output)
    return result


def _write_runs(model: _Model, batch_rows: int, keys_of: Callable, writer: _FolderWriter) -> _Tally:
    renderer = _Renderer(model)
    tally = _Tally(np.zeros(len(model.customers.ids), dtype=bool))
    for batch, lines in _batches(model, batch_rows):
        for key, piece, count in renderer.runs(batch, lines, keys_of(model, batch, lines)):
            writer.write(key, piece, count)
        tally.add(batch, lines)
    return tally


def _write_manifest(folder: Path, about: dict, files: list[dict]) -> int:
    """`_manifest.json`: how the folder was made and each file's rows, bytes and SHA-256.

    Returns the bytes of the CSV files.
    """
    size = sum(f["bytes"] for f in files)
    manifest = {"generator": "retail-data-platform data generate", **about, "file_count": len(files), "bytes": size, "files": files}
    path = folder / MANIFEST_NAME
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    _fsync_path(path)
    _fsync_path(folder)
    return size

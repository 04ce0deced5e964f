"""Human-written dates -> ISO 8601, generated with `datetime` (no torch here).

Every format is unambiguous: month names are spelled out, or the numeric order is fixed by the format
and documented in FORMATS (day-first with dots, year-first with slashes or dashes; never the
ambiguous 03/05/2021). Days are split, not examples: held-out dates never occur in training, in any
format.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from training.text import CharTokenizer

FIRST_DAY = dt.date(1950, 1, 1)
LAST_DAY = dt.date(2049, 12, 31)
DATE_CHARS = sorted(
    set("0123456789 ,./-'") | set("abcdefghijklmnopqrstuvwxyz") | set("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
)
MAX_SOURCE = 40  # longest format ("Wednesday, the 30th of September 2049") is 37 characters
MAX_TARGET = 12  # bos + "YYYY-MM-DD" + eos


def _ordinal(n: int) -> str:
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month(d: dt.date) -> str:
    return d.strftime("%B")


# name -> renderer; numeric formats state their field order in the name.
FORMATS: dict[str, Callable[[dt.date], str]] = {
    "Month D, YYYY": lambda d: f"{_month(d)} {d.day}, {d.year}",
    "D Month YYYY": lambda d: f"{d.day} {_month(d)} {d.year}",
    "Mon D, YYYY": lambda d: f"{_month(d)[:3]} {d.day}, {d.year}",
    "D Mon YYYY": lambda d: f"{d.day} {_month(d)[:3]} {d.year}",
    "Mon. D YYYY": lambda d: f"{_month(d)[:3]}. {d.day} {d.year}",
    "Weekday, Month D, YYYY": lambda d: f"{d.strftime('%A')}, {_month(d)} {d.day}, {d.year}",
    "Wkd, D Mon YYYY": lambda d: f"{d.strftime('%a')}, {d.day} {_month(d)[:3]} {d.year}",
    "Month Dth, YYYY": lambda d: f"{_month(d)} {_ordinal(d.day)}, {d.year}",
    "the Dth of Month YYYY": lambda d: f"the {_ordinal(d.day)} of {_month(d)} {d.year}",
    "Weekday, the Dth of Month YYYY": lambda d: (
        f"{d.strftime('%A')}, the {_ordinal(d.day)} of {_month(d)} {d.year}"
    ),
    "month d yyyy (lower case)": lambda d: f"{_month(d).lower()} {d.day} {d.year}",
    "MONTH D, YYYY (upper case)": lambda d: f"{_month(d).upper()} {d.day}, {d.year}",
    "D-Mon-YYYY": lambda d: f"{d.day:02d}-{_month(d)[:3]}-{d.year}",
    "Mon D YYYY": lambda d: f"{_month(d)[:3]} {d.day} {d.year}",
    "DD.MM.YYYY (day first)": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "D.M.YYYY (day first)": lambda d: f"{d.day}.{d.month}.{d.year}",
    "YYYY/MM/DD (year first)": lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",
    "YYYY-MM-DD (ISO)": lambda d: d.isoformat(),
    "YYYYMMDD (compact ISO)": lambda d: d.strftime("%Y%m%d"),
}


def all_days() -> list[dt.date]:
    n = (LAST_DAY - FIRST_DAY).days + 1
    return [FIRST_DAY + dt.timedelta(days=i) for i in range(n)]


@dataclass(frozen=True)
class DateSplit:
    """Days (as ordinals) per part: a seeded permutation of every day in [FIRST_DAY, LAST_DAY]."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    seed: int


def split_days(seed: int = 0, val_fraction: float = 0.05, test_fraction: float = 0.1) -> DateSplit:
    days = np.array([d.toordinal() for d in all_days()])
    perm = np.random.default_rng(seed).permutation(len(days))
    n_test, n_val = int(len(days) * test_fraction), int(len(days) * val_fraction)
    test, val, train = np.split(days[perm], [n_test, n_test + n_val])
    return DateSplit(np.sort(train), np.sort(val), np.sort(test), seed)


def examples(days: np.ndarray, n: int, seed: int) -> list[tuple[str, str]]:
    """`n` (human, ISO) pairs: days and formats drawn uniformly with a seeded generator."""
    rng = np.random.default_rng(seed)
    names = list(FORMATS)
    pick_day = rng.integers(0, len(days), size=n)
    pick_fmt = rng.integers(0, len(names), size=n)
    out = []
    for i, f in zip(pick_day, pick_fmt, strict=True):
        d = dt.date.fromordinal(int(days[i]))
        out.append((FORMATS[names[f]](d), d.isoformat()))
    return out


def tokenizer() -> CharTokenizer:
    return CharTokenizer.with_chars(DATE_CHARS)


def encode_pairs(tok: CharTokenizer, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """Source ids [n, MAX_SOURCE] (pad-filled) and target ids [n, MAX_TARGET] = bos ISO eos pad..."""
    pad, bos, eos = tok.id("pad"), tok.id("bos"), tok.id("eos")
    src = np.full((len(pairs), MAX_SOURCE), pad, dtype=np.int64)
    tgt = np.full((len(pairs), MAX_TARGET), pad, dtype=np.int64)
    for i, (s, t) in enumerate(pairs):
        s_ids, t_ids = tok.encode(s), [bos, *tok.encode(t), eos]
        src[i, : len(s_ids)] = s_ids
        tgt[i, : len(t_ids)] = t_ids
    return src, tgt

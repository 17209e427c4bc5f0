"""The dates task: human-written dates in many formats → ISO 8601 ("tuesday 3 september 1995" → "1995-09-03").

A classic sequence-to-sequence exercise (it appears in Andrew Ng's course and in "Deep Learning from
Scratch 2", chapter 8) that needs no download: every pair is made here, from a seed, with Python's
``datetime``.  The model must learn to read month names and abbreviations, ordinals ("3rd"), weekdays
(redundant but present), two- and four-digit years, and reorder the fields.

Every source string has exactly one answer:
* numeric forms are day first ("03/09/95" is 3 September), except the year-first forms whose
  four-digit year comes first ("1995/09/03"), so no string reads two ways;
* dates run from 1950-01-01 to 2049-12-31 and a two-digit year yy means 19yy if yy ≥ 50, else 20yy
  (the POSIX ``%y`` pivot is 69; one century window keeps the rule simple);
* a weekday, when present, is the true weekday of the date.
Held-out dates are whole dates kept out of training in every format, so evaluation measures reading
dates never seen, not recalling them.
"""
from __future__ import annotations

import datetime as dt

import numpy as np

FIRST_DATE = dt.date(1950, 1, 1)
LAST_DATE = dt.date(2049, 12, 31)
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august", "september",
          "october", "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

# str.format patterns over the fields made by _fields: d/dd day, m/mm month, yy/yyyy year, month/mon
# (full and 3-letter month name), weekday/wd (full and 3-letter weekday), dth (ordinal day "3rd").
FORMATS = (
    "{weekday} {d} {month} {yyyy}",      # tuesday 3 september 1995
    "{weekday}, {d} {month} {yyyy}",
    "{wd} {d} {mon} {yyyy}",             # tue 3 sep 1995
    "{d} {month} {yyyy}",
    "{d} {mon} {yyyy}",
    "{dd} {mon} {yy}",                   # 03 sep 95
    "{d} {mon} '{yy}",                   # 3 sep '95
    "{mon} {d}, {yyyy}",                 # sep 3, 1995
    "{mon}. {d}, {yyyy}",
    "{month} {d}, {yyyy}",
    "{month} {dth}, {yyyy}",             # september 3rd, 1995
    "{weekday}, {month} {d}, {yyyy}",
    "{dth} of {month} {yyyy}",           # 3rd of september 1995
    "the {dth} of {month}, {yyyy}",
    "{dd}/{mm}/{yy}",                    # 03/09/95
    "{dd}/{mm}/{yyyy}",
    "{d}/{m}/{yyyy}",
    "{d}.{m}.{yyyy}",                    # 3.9.1995
    "{dd}.{mm}.{yyyy}",
    "{dd}-{mm}-{yyyy}",
    "{yyyy}/{mm}/{dd}",
    "{yyyy}-{mm}-{dd}",
)
CASES = ("lower", "title", "upper")
CASE_WEIGHTS = (0.6, 0.3, 0.1)


def _ordinal(day: int) -> str:
    """1 → "1st", 2 → "2nd", 3 → "3rd", 11–13 → "th", 21 → "21st"."""
    suffix = "th" if 11 <= day <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{day}{suffix}"


def _fields(date: dt.date, case: str) -> dict:
    month, weekday = MONTHS[date.month - 1], WEEKDAYS[date.weekday()]
    if case == "title":                        # names capitalised, as people write them
        month, weekday = month.capitalize(), weekday.capitalize()
    return {"d": date.day, "dd": f"{date.day:02d}", "m": date.month, "mm": f"{date.month:02d}",
            "yy": f"{date.year % 100:02d}", "yyyy": date.year, "month": month, "mon": month[:3],
            "weekday": weekday, "wd": weekday[:3], "dth": _ordinal(date.day)}


def format_date(date: dt.date, fmt: str, case: str = "lower") -> str:
    """``date`` written with pattern ``fmt`` (one of FORMATS) in ``case`` ("lower", "title", "upper")."""
    if not FIRST_DATE <= date <= LAST_DATE:
        raise ValueError(f"date must lie in [{FIRST_DATE}, {LAST_DATE}] (two-digit years are read in that "
                         f"century), got {date}")
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}, got {case!r}")
    text = fmt.format(**_fields(date, case))
    return text.upper() if case == "upper" else text


def random_dates(n: int, rng: np.random.Generator, exclude: set | None = None) -> list[dt.date]:
    """n dates drawn uniformly from [FIRST_DATE, LAST_DATE], skipping ordinals in ``exclude``."""
    first, last = FIRST_DATE.toordinal(), LAST_DATE.toordinal()
    dates: list[dt.date] = []
    while len(dates) < n:
        ordinals = rng.integers(first, last + 1, size=n - len(dates))
        dates.extend(dt.date.fromordinal(int(o)) for o in ordinals if exclude is None or int(o) not in exclude)
    return dates


def date_pairs(dates, rng: np.random.Generator) -> list[tuple[str, str]]:
    """(source, target) pairs: each date in a random format and case → its ISO form "YYYY-MM-DD"."""
    formats = rng.integers(len(FORMATS), size=len(dates))
    cases = rng.choice(len(CASES), size=len(dates), p=CASE_WEIGHTS)
    return [(format_date(date, FORMATS[f], CASES[c]), date.isoformat()) for date, f, c in zip(dates, formats, cases)]


def dates_task(n_train: int = 100_000, n_test: int = 2_000, seed: int = 0):
    """(train pairs, test pairs): ``n_test`` distinct held-out dates that never occur in training."""
    if n_test > LAST_DATE.toordinal() - FIRST_DATE.toordinal() + 1:
        raise ValueError(f"n_test must not exceed the number of days in the range, got {n_test}")
    test_rng, train_rng = (np.random.default_rng([seed, stream]) for stream in (1, 2))
    first = FIRST_DATE.toordinal()
    test_ordinals = test_rng.choice(LAST_DATE.toordinal() - first + 1, size=n_test, replace=False) + first
    test_dates = [dt.date.fromordinal(int(o)) for o in test_ordinals]
    held_out = {int(o) for o in test_ordinals}
    return date_pairs(random_dates(n_train, train_rng, held_out), train_rng), date_pairs(test_dates, test_rng)

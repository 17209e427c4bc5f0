"""The dates task: the formats say what they claim (checked with strptime), every source has exactly one
answer, held-out dates never occur in training, and generation is reproducible from the seed."""
import datetime as dt
import re

import numpy as np
import pytest

from npllm.datasets.dates import (CASES, FIRST_DATE, FORMATS, LAST_DATE, WEEKDAYS, date_pairs, dates_task,
                                  format_date, random_dates)

SEPT_3_1995 = dt.date(1995, 9, 3)


@pytest.mark.parametrize("fmt, case, text", [
    ("{weekday} {d} {month} {yyyy}", "lower", "sunday 3 september 1995"),
    ("{dd}/{mm}/{yy}", "lower", "03/09/95"),
    ("{mon} {d}, {yyyy}", "title", "Sep 3, 1995"),
    ("{d}.{m}.{yyyy}", "lower", "3.9.1995"),
    ("{month} {dth}, {yyyy}", "lower", "september 3rd, 1995"),
    ("the {dth} of {month}, {yyyy}", "upper", "THE 3RD OF SEPTEMBER, 1995"),
])
def test_formats_write_the_date_as_people_do(fmt, case, text):
    assert format_date(SEPT_3_1995, fmt, case) == text


@pytest.mark.parametrize("day, ordinal", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"),
                                          (12, "12th"), (13, "13th"), (21, "21st"), (22, "22nd"), (31, "31st")])
def test_ordinal_days(day, ordinal):
    assert format_date(dt.date(2001, 1, day), "{dth}") == ordinal


# Each placeholder as a strptime directive: an independent reading of the strings.
_STRPTIME = {"d": "%d", "dd": "%d", "m": "%m", "mm": "%m", "yy": "%y", "yyyy": "%Y", "month": "%B",
             "mon": "%b", "weekday": "%A", "wd": "%a", "dth": "%d"}


def _parse(text: str, fmt: str) -> dt.date:
    pattern = re.sub(r"\{(\w+)\}", lambda m: _STRPTIME[m.group(1)], fmt)
    text = re.sub(r"(\d)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE)     # strptime has no ordinals
    parsed = dt.datetime.strptime(text, pattern).date()
    if "{yy}" in fmt and parsed.year > LAST_DATE.year:                          # %y's pivot is 69, ours 50
        parsed = parsed.replace(year=parsed.year - 100)
    return parsed


def test_every_format_and_case_reads_back_as_the_same_date():
    rng = np.random.default_rng(0)
    dates = random_dates(60, rng) + [FIRST_DATE, LAST_DATE, dt.date(2000, 2, 29), dt.date(1968, 12, 31)]
    for date in dates:
        for fmt in FORMATS:
            for case in CASES:
                text = format_date(date, fmt, case)
                assert _parse(text, fmt) == date, (text, fmt)
                if "weekday" in fmt or "{wd}" in fmt:                           # the weekday is the true one
                    assert WEEKDAYS[date.weekday()][:3] in text.lower()


def test_every_source_string_has_exactly_one_answer():
    rng = np.random.default_rng(1)
    answer_of = {}
    for date in random_dates(1500, rng) + [FIRST_DATE, LAST_DATE, dt.date(1969, 1, 1), dt.date(2049, 1, 1)]:
        for fmt in FORMATS:
            for case in CASES:
                text = format_date(date, fmt, case)
                assert answer_of.setdefault(text, date) == date, f"{text!r} reads as {answer_of[text]} and {date}"


def test_dates_outside_the_two_digit_year_window_are_refused():
    with pytest.raises(ValueError, match="date must lie in"):
        format_date(dt.date(1949, 12, 31), "{dd}/{mm}/{yy}")


def test_held_out_dates_never_occur_in_training():
    train, test = dates_task(n_train=20_000, n_test=2_000, seed=3)
    assert len(train) == 20_000 and len(test) == 2_000
    test_dates = {target for _, target in test}
    assert len(test_dates) == 2_000                                             # distinct held-out dates
    assert test_dates.isdisjoint(target for _, target in train)
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", target) for _, target in train + test)


def test_generation_is_reproducible_and_covers_every_format():
    first, second = dates_task(n_train=3_000, n_test=100, seed=5), dates_task(n_train=3_000, n_test=100, seed=5)
    assert first == second
    assert dates_task(n_train=3_000, n_test=100, seed=6) != first
    rng = np.random.default_rng(7)
    pairs = date_pairs([SEPT_3_1995] * 2_000, rng)
    sources = {source for source, _ in pairs}
    for fmt in FORMATS:
        assert format_date(SEPT_3_1995, fmt) in sources or format_date(SEPT_3_1995, fmt, "title") in sources
    assert {target for _, target in pairs} == {"1995-09-03"}

"""Numeric signals of profile items: a rating, a date, a count, as a fixed-width feature row.

Every task maps the numeric fields its profile items carry to one of a few kinds
(`TaskSpec.numeric_fields`, e.g. LaMP-3's "score" is a rating). Each kind has one slot
in a feature row shared by all tasks, so one projection serves a joint multi-task run:

    row = [rating, has rating, date, has date, count, has count]        (NUM_FEATURES = 6)

Values are normalized by fixed rules rather than statistics of the training data, so
nothing has to be fitted, saved or kept in step with a checkpoint:

    rating  1..5 stars              -> (x - 3) / 2              in [-1, 1]
    date    "YYYY-MM-DD[...]", "YYYY", or a unix timestamp
                                    -> (years since 2000) / 10  about [-1, 2.5] for 1990..2025
    count   >= 0 (citations, votes) -> log1p(x) / log1p(1000)   1.0 at a thousand

A field that is missing or does not parse gives value 0 with its "has" flag at 0, so the
model can tell "no date" from "the year 2000".
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

KINDS = ("rating", "date", "count")
NUM_FEATURES = 2 * len(KINDS)

_DATE = re.compile(r"^\s*(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?")
# Numbers above this are unix timestamps in seconds, not years (year 10000 is far off).
_TIMESTAMP_MIN = 10_000


def _number(value: Any) -> float | None:
    if isinstance(value, bool):  # bool is an int subclass, and never a rating or a count
        return None
    if isinstance(value, (int, float)):
        return float(value) if math.isfinite(value) else None
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def years_since_2000(value: Any) -> float | None:
    """A date as fractional years since 2000-01-01; None if it does not parse."""
    number = _number(value)
    if number is not None:
        if number >= _TIMESTAMP_MIN:  # unix seconds
            moment = datetime.fromtimestamp(number, tz=timezone.utc)
            return moment.year - 2000 + (moment.timetuple().tm_yday - 1) / 365.25
        return number - 2000  # a bare year
    match = _DATE.match(str(value))
    if match is None:
        return None
    year, month, day = int(match[1]), int(match[2] or 1), int(match[3] or 1)
    if not (1 <= month <= 12 and 1 <= day <= 31):
        return None
    return year - 2000 + ((month - 1) * 30.44 + day - 1) / 365.25


def normalize(kind: str, value: Any) -> float | None:
    """One field's value as a model input, or None when it is missing or malformed."""
    if value is None:
        return None
    if kind == "rating":
        number = _number(value)
        return None if number is None else (number - 3.0) / 2.0
    if kind == "date":
        years = years_since_2000(value)
        return None if years is None else years / 10.0
    if kind == "count":
        number = _number(value)
        return None if number is None or number < 0 else math.log1p(number) / math.log1p(1000)
    raise ValueError(f"numeric kind must be one of {KINDS}, got {kind!r}")


def item_features(item: Mapping[str, Any], fields: Iterable[tuple[str, str]]) -> list[float]:
    """One profile item -> its NUM_FEATURES-wide row; `fields`: (field name, kind) pairs."""
    row = [0.0] * NUM_FEATURES
    for name, kind in fields:
        value = normalize(kind, item.get(name))
        if value is not None:
            slot = 2 * KINDS.index(kind)
            row[slot], row[slot + 1] = value, 1.0
    return row

"""The fact an engine sees: the validated intake, with dates turned into ages.

Rules say "within 12 months of today"; a compiled engine cannot know today, so every date
field gets two numbers beside it, computed for the evaluation's ``as_of``: days and calendar
months elapsed. Arrays get their length, nulls disappear (absent and null mean the same).
The intake must have been validated by ``schemas.intake.IntakeSchema``: dates are date objects.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from service.policy.operators import COUNT_SUFFIX, DAYS_SUFFIX, MONTHS_SUFFIX, age
MARKER = "__intake"
FINDINGS = "__findings"
# Keeps the findings array non-empty: the engine's all-items operator is false on [].
NO_FINDING = "__none__"


def build_fact(intake: dict, as_of: dt.datetime) -> dict:
    fact = _convert(intake, as_of)
    fact[MARKER] = 1
    fact[FINDINGS] = [NO_FINDING]
    return fact


def _convert(data: dict, as_of: dt.datetime) -> dict:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, (dt.date, dt.datetime)):
            days, months = age(value, as_of)
            out[key] = value.isoformat()  # kept so that `exists` sees the field
            out[key + DAYS_SUFFIX] = round(days, 6)
            out[key + MONTHS_SUFFIX] = round(months, 6)
        elif isinstance(value, dict):
            out[key] = _convert(value, as_of)
        elif isinstance(value, list):
            out[key] = [_convert(v, as_of) if isinstance(v, dict) else v for v in value]
            out[key + COUNT_SUFFIX] = len(value)
        else:
            out[key] = value
    return out


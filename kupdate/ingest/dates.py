"""Date parsing for ingest: every date kupdate stores is an ISO string that sorts in time order.

Freshness comparisons in the memory store are plain string comparisons (`"2025-03-01" <
"2025-04-01"`), so every date must be normalised to one of exactly two shapes:

* ``YYYY-MM-DD`` for date-only input (``2024`` -> ``2024-01-01``, ``2024-05`` -> ``2024-05-01``);
* ``YYYY-MM-DDTHH:MM:SS+00:00`` for datetimes, converted to UTC.

A date-only value sorts before any datetime on the same day (it is a prefix of it), which matches
the reading "valid from the start of that day".
"""

from __future__ import annotations

import datetime as dt
import re

from kupdate.errors import InputError

__all__ = ["parse_date", "now_iso"]

# `datetime.UTC` only exists from Python 3.11 and the project supports 3.10; this is the same zone.
_UTC = dt.timezone(dt.timedelta(0))
_YEAR = re.compile(r"\d{4}")
_YEAR_MONTH = re.compile(r"(\d{4})-(\d{2})")
_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})")
# Parsed by hand rather than with `datetime.fromisoformat`: Python 3.10's version rejects 'Z' and
# fraction lengths other than 3 or 6 digits, while 3.11's accepts compact forms like "20240101"
# that we do not want to document. One regex gives the same behaviour on every supported Python.
_DATETIME = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d+))?)?"
    r"\s*(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<tzh>\d{2}):?(?P<tzm>\d{2}))?"
)


def _invalid(value: object, where: str) -> InputError:
    prefix = f"{where}: " if where else ""
    return InputError(f"{prefix}invalid date {value!r}; use YYYY-MM-DD")


def _format_datetime(value: dt.datetime) -> str:
    # Naive datetimes are taken as UTC: guessing the machine's local zone would make the same
    # file ingest differently on different machines.
    if value.tzinfo is None:
        value = value.replace(tzinfo=_UTC)
    utc = value.astimezone(_UTC).replace(microsecond=0)
    return utc.strftime("%Y-%m-%dT%H:%M:%S") + "+00:00"


def _parse_string(text: str) -> str:
    """Parse a stripped string; raise ValueError/OverflowError when it is not a valid date."""
    if _YEAR.fullmatch(text):
        return dt.date(int(text), 1, 1).isoformat()
    if m := _YEAR_MONTH.fullmatch(text):
        return dt.date(int(m[1]), int(m[2]), 1).isoformat()
    if m := _DATE.fullmatch(text):
        return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    m = _DATETIME.fullmatch(text)
    if m is None:
        raise ValueError(text)
    tz: dt.tzinfo | None = None
    if m["z"]:
        tz = _UTC
    elif m["sign"]:
        if int(m["tzm"]) > 59:
            raise ValueError(text)
        offset = dt.timedelta(hours=int(m["tzh"]), minutes=int(m["tzm"]))
        tz = dt.timezone(-offset if m["sign"] == "-" else offset)
    # Fractions are truncated to microseconds here and then dropped by the output format anyway.
    micro = int((m[7] or "0")[:6].ljust(6, "0"))
    parsed = dt.datetime(
        int(m[1]), int(m[2]), int(m[3]), int(m[4]), int(m[5]), int(m[6] or 0), micro, tzinfo=tz
    )
    return _format_datetime(parsed)


def parse_date(value: str | int | dt.date | dt.datetime, *, where: str = "") -> str:
    """Normalise a date to a lexicographically sortable ISO string.

    Accepts ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD``, ISO datetimes (``T`` or space separator,
    optional seconds/fraction, optional ``Z`` or ``+HH:MM`` offset), an ``int`` year, and
    ``date``/``datetime`` objects. Date-only input gives ``YYYY-MM-DD``; datetimes give
    ``YYYY-MM-DDTHH:MM:SS+00:00`` in UTC (naive ones are taken as UTC; sub-seconds are dropped).

    Raises `InputError` naming `where` (e.g. ``"notes.md:3"``) for anything else.
    """
    try:
        # datetime before date: datetime is a subclass of date.
        if isinstance(value, dt.datetime):
            return _format_datetime(value)
        if isinstance(value, dt.date):
            return value.isoformat()
        # bool is an int subclass; `date: true` in a file is a mistake, not the year 1.
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 9999:
                raise ValueError(value)
            return dt.date(value, 1, 1).isoformat()
        if isinstance(value, str):
            return _parse_string(value.strip())
    except (ValueError, OverflowError):
        pass
    raise _invalid(value, where)


def now_iso() -> str:
    """The current time in UTC, in the same format `parse_date` gives datetimes."""
    return _format_datetime(dt.datetime.now(_UTC))

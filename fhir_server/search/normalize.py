"""Value normalisation shared by indexing (write time) and query parsing (read time).

Both sides must normalise identically, otherwise a stored value can never be found: strings are
folded the same way, dates become the same UTC ranges, quantities the same canonical units.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime, timedelta, tzinfo
from datetime import timezone as fixed_offset
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from zoneinfo import ZoneInfo

# Dates written without a timezone (birthDate, a search for `date=2024-05-01`) are read in the
# server's timezone: for a French server a document dated 2024-05-01T00:30+02:00 is "on the 1st".
DEFAULT_TIMEZONE: tzinfo = ZoneInfo("Europe/Paris")

# Open ends of a Period and the limits of BSON dates (millisecond precision).
DATE_MIN = datetime(1, 1, 1, tzinfo=UTC)
DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)

# -- strings ------------------------------------------------------------------------------------

_LIGATURES = str.maketrans({"œ": "oe", "Œ": "oe", "æ": "ae", "Æ": "ae", "ß": "ss", "ø": "o", "Ø": "o",
                            "đ": "d", "Đ": "d", "ł": "l", "Ł": "l", "’": "'"})


@lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """Case- and accent-insensitive form of a string: `Hélène` and `HELENE` both give `helene`."""
    if text.isascii():
        return " ".join(text.lower().split())
    decomposed = unicodedata.normalize("NFKD", text.translate(_LIGATURES))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def prefix_upper_bound(prefix: str) -> str:
    """The smallest string greater than every string starting with `prefix`, so that a prefix
    match is the index range [prefix, bound) rather than a regular expression."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def prefix_range(prefix: str) -> dict:
    return {"$gte": prefix, "$lt": prefix_upper_bound(prefix)}


# -- dates --------------------------------------------------------------------------------------

_DATE = re.compile(
    r"^(?P<y>\d{4})(?:-(?P<m>\d{2})(?:-(?P<d>\d{2})"
    r"(?:T(?P<H>\d{2}):(?P<M>\d{2})(?::(?P<S>\d{2})(?P<f>\.\d+)?)?(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)


def date_range(text: str, timezone: tzinfo = DEFAULT_TIMEZONE) -> tuple[datetime, datetime]:
    """The instants covered by a FHIR date/dateTime/instant at its own precision, as a half-open
    UTC range [low, high). `2024` covers the whole year, `2024-05-01T10:00` one minute.
    Raises ValueError for anything that is not a FHIR date."""
    match = _DATE.match(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a FHIR date: {text!r}")
    parts = match.groupdict()
    year = int(parts["y"])
    month = int(parts["m"] or 1)
    day = int(parts["d"] or 1)
    zone = _zone(parts["tz"]) if parts["tz"] else timezone
    if parts["H"] is None:
        start = datetime(year, month, day, tzinfo=zone)
        if parts["d"]:
            end = start + timedelta(days=1)
        elif parts["m"]:
            end = _first_day(year + month // 12, month % 12 + 1, zone)
        else:
            end = _first_day(year + 1, 1, zone)
        return _utc(start), _utc(end)
    hour, minute = int(parts["H"]), int(parts["M"])
    second = int(parts["S"] or 0)
    fraction = parts["f"] or ""
    micros = int((fraction[1:] + "000000")[:6]) if fraction else 0
    micros -= micros % 1000                       # BSON dates keep milliseconds
    start = datetime(year, month, day, hour, minute, second, micros, tzinfo=zone)
    if parts["S"] is None:
        width = timedelta(minutes=1)
    elif not fraction:
        width = timedelta(seconds=1)
    else:
        width = max(ONE_MS, timedelta(seconds=10 ** -(len(fraction) - 1)))
    return _utc(start), _utc(start + width)


def _first_day(year: int, month: int, zone: tzinfo) -> datetime:
    return datetime(year, month, 1, tzinfo=zone) if year <= 9999 else DATE_MAX


def _zone(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    sign = 1 if text[0] == "+" else -1
    hours, minutes = int(text[1:3]), int(text[4:6])
    return fixed_offset(sign * timedelta(hours=hours, minutes=minutes))


def _utc(value: datetime) -> datetime:
    return min(max(value.astimezone(UTC), DATE_MIN), DATE_MAX)


def to_utc(value: datetime) -> datetime:
    """A datetime as stored (UTC, millisecond precision)."""
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    return value.replace(microsecond=value.microsecond - value.microsecond % 1000)


# -- numbers and quantities ---------------------------------------------------------------------

def parse_decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"not a number: {text!r}") from None
    if not value.is_finite():
        raise ValueError(f"not a number: {text!r}")
    return value


def implicit_range(value: Decimal) -> tuple[Decimal, Decimal]:
    """`100` means [99.5, 100.5): half a unit of the last significant digit either side."""
    exponent = value.as_tuple().exponent
    half = Decimal(5).scaleb(int(exponent) - 1) if isinstance(exponent, int) else Decimal(0)
    return value - half, value + half


UCUM = "http://unitsofmeasure.org"

# UCUM units we bring to one canonical unit per dimension, so that `5 mg` is found by `0.005 g`.
_CANONICAL_UNITS: dict[str, tuple[str, Decimal]] = {
    "kg": ("g", Decimal(1000)), "g": ("g", Decimal(1)), "mg": ("g", Decimal("0.001")),
    "ug": ("g", Decimal("0.000001")), "ng": ("g", Decimal("1E-9")), "pg": ("g", Decimal("1E-12")),
    "L": ("L", Decimal(1)), "l": ("L", Decimal(1)), "dL": ("L", Decimal("0.1")), "cL": ("L", Decimal("0.01")),
    "mL": ("L", Decimal("0.001")), "uL": ("L", Decimal("0.000001")), "fL": ("L", Decimal("1E-15")),
    "km": ("m", Decimal(1000)), "m": ("m", Decimal(1)), "cm": ("m", Decimal("0.01")),
    "mm": ("m", Decimal("0.001")), "um": ("m", Decimal("0.000001")),
    "s": ("s", Decimal(1)), "ms": ("s", Decimal("0.001")), "min": ("s", Decimal(60)),
    "h": ("s", Decimal(3600)), "d": ("s", Decimal(86400)), "wk": ("s", Decimal(604800)),
    "mol": ("mol", Decimal(1)), "mmol": ("mol", Decimal("0.001")), "umol": ("mol", Decimal("0.000001")),
    "nmol": ("mol", Decimal("1E-9")),
    "g/L": ("g/L", Decimal(1)), "mg/L": ("g/L", Decimal("0.001")), "g/dL": ("g/L", Decimal(10)),
    "mg/dL": ("g/L", Decimal("0.01")), "mmol/L": ("mol/L", Decimal("0.001")), "mol/L": ("mol/L", Decimal(1)),
    "umol/L": ("mol/L", Decimal("0.000001")),
    "Cel": ("Cel", Decimal(1)), "%": ("%", Decimal(1)), "mm[Hg]": ("mm[Hg]", Decimal(1)),
    "/min": ("/min", Decimal(1)), "kg/m2": ("kg/m2", Decimal(1)),
}


def canonical_quantity(value: Decimal, system: str | None, code: str | None) -> tuple[Decimal, str] | None:
    """(value, unit) in the canonical UCUM unit of the dimension, or None when not convertible."""
    if system != UCUM or not code:
        return None
    known = _CANONICAL_UNITS.get(code)
    if known is None:
        return None
    unit, factor = known
    return (value * factor).normalize(), unit


# -- references ---------------------------------------------------------------------------------

def local_reference(reference: str) -> str | None:
    """`Type/id` for a relative reference (version dropped), the reference itself for an absolute
    URL, a urn or a canonical; None for contained (`#x`) and conditional (`Type?...`) references."""
    if not reference or reference.startswith("#") or "?" in reference:
        return None
    if "/_history/" in reference:
        reference = reference.split("/_history/", 1)[0]
    return reference

"""The national organised screening programmes as data (`terminology/screening-programmes.json`)
and when a person's next screening is due. Pure functions over dates, like the vaccination
calendar; the table's `description` says how each field is read."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from dateutil.relativedelta import relativedelta

from fhir_server.definitions.paths import PROJECT_ROOT
from fhir_server.vaccination.calendar import duration

PROGRAMMES_FILE = PROJECT_ROOT / "terminology" / "screening-programmes.json"


@dataclass(frozen=True)
class Band:
    start: relativedelta        # age the band starts at (included)
    until: relativedelta        # age it ends at (excluded)
    every: relativedelta
    test: str


@dataclass(frozen=True)
class Programme:
    id: str
    reminder_code: str
    label: str
    sexes: frozenset[str]
    bands: tuple[Band, ...]
    evidence: tuple[str, ...]       # "system|code" of results and procedures that prove a screening


@dataclass(frozen=True)
class Screening:
    """The next screening of one programme for one person."""

    programme: Programme
    due: date
    band: Band
    round_age: int          # age (years) at which the screening round holding `due` starts

    @property
    def round_key(self) -> str:
        """Names the round ("colorectal/60ans"): one reminder per round, whatever day it is asked."""
        return f"{self.programme.id}/{self.round_age}ans"


@dataclass(frozen=True)
class Programmes:
    reminder_system: str
    programmes: tuple[Programme, ...]


def _programme(data: dict) -> Programme:
    bands = tuple(Band(duration(b["from"]), duration(b["until"]), duration(b["every"]), b.get("test", ""))
                  for b in data["bands"])
    return Programme(data["id"], data["reminderCode"], data["label"], frozenset(data["sex"]), bands,
                     tuple(data.get("evidence", ())))


@functools.cache
def load_programmes(path: Path = PROGRAMMES_FILE) -> Programmes:
    data = json.loads(path.read_text(encoding="utf-8"))
    return Programmes(data["reminderSystem"], tuple(_programme(p) for p in data["programmes"]))


def next_screening(programme: Programme, birth: date, gender: str | None, last_done: date | None,
                   on: date) -> Screening | None:
    """When the next screening of `programme` is due for a person born on `birth`, screened last on
    `last_done` (None: never, as far as the record shows), seen on `on`. None when the programme
    does not concern them (sex, or past its last age)."""
    if gender not in programme.sexes or not programme.bands:
        return None
    first, last = programme.bands[0], programme.bands[-1]
    entry = birth + first.start
    if last_done is None:
        due = max(on, entry)
    else:
        band = _band_at(programme, birth, last_done) or _band_at(programme, birth, on) or first
        due = max(last_done + band.every, entry)
    if due >= birth + last.until:
        return None
    band = _band_at(programme, birth, due) or first
    return Screening(programme, due, band, _round_age(birth, band, due))


def _band_at(programme: Programme, birth: date, day: date) -> Band | None:
    return next((b for b in programme.bands if birth + b.start <= day < birth + b.until), None)


def _round_age(birth: date, band: Band, day: date) -> int:
    """Rounds follow one another every `band.every` from the band's first age."""
    start = birth + band.start
    while start + band.every <= day:
        start = start + band.every
    return relativedelta(start, birth).years

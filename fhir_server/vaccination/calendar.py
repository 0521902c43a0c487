"""The French vaccination calendar as data (`terminology/vaccination-calendar.json`) and the
forecast it gives for one person: from the birth date and the doses recorded, the next dose of
each series, when it is due and whether it is late.

Pure functions over dates: no FHIR server in sight, so that the rules can be unit-tested and
read against the published calendar. The table's `description` says how each field is read.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from dateutil.relativedelta import relativedelta

from fhir_server.definitions.paths import PROJECT_ROOT

CALENDAR_FILE = PROJECT_ROOT / "terminology" / "vaccination-calendar.json"
OLDEST_AGE_YEARS = 120
_DURATION = re.compile(r"^P(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)W)?(?:(\d+)D)?$")


def duration(text: str) -> relativedelta:
    """An ISO 8601 calendar duration (P2M, P11Y6M, P6W) as a relativedelta."""
    match = _DURATION.match(text or "")
    if match is None or not any(match.groups()):
        raise ValueError(f"{text!r} is not an ISO 8601 duration such as P2M or P11Y")
    years, months, weeks, days = (int(g) if g else 0 for g in match.groups())
    return relativedelta(years=years, months=months, weeks=weeks, days=days)


@dataclass(frozen=True)
class Vaccine:
    atc: str
    display: str


@dataclass(frozen=True)
class Dose:
    age: relativedelta
    vaccine: Vaccine
    label: str = ""
    min_interval: relativedelta = field(default_factory=relativedelta)
    until: relativedelta | None = None          # boosters: late once this age is passed
    mandatory: bool = False


@dataclass(frozen=True)
class Series:
    id: str
    label: str
    target_diseases: tuple[tuple[str, str], ...]    # (SNOMED code, display)
    atc: frozenset[str]
    cis: frozenset[str]
    born_from: date | None
    born_before: date | None
    mandatory_born_from: date | None
    overdue_after: relativedelta
    primary: tuple[Dose, ...]
    catch_up_until: relativedelta | None
    complete_with_dose_from: relativedelta | None
    boosters: tuple[Dose, ...]
    booster_min_interval: relativedelta
    booster_overdue_after: relativedelta
    then_every: relativedelta | None
    then_vaccine: Vaccine | None

    def applies_to(self, birth: date) -> bool:
        return (self.born_from is None or birth >= self.born_from) and \
            (self.born_before is None or birth < self.born_before)

    def counts(self, codings: Iterable[tuple[str | None, str | None]], target_diseases: set[str],
               systems: dict[str, str]) -> bool:
        """Whether a recorded vaccination (its vaccineCode codings and target diseases) is a
        dose of this series."""
        for system, code in codings:
            if system == systems["atc"] and code in self.atc:
                return True
            if system == systems["cis"] and code in self.cis:
                return True
        wanted = {code for code, _ in self.target_diseases}
        return bool(target_diseases) and wanted <= target_diseases

    def is_mandatory(self, birth: date, dose: Dose) -> bool:
        return dose.mandatory and self.mandatory_born_from is not None and birth >= self.mandatory_born_from


@dataclass(frozen=True)
class Calendar:
    version: str
    title: str
    systems: dict[str, str]
    series: tuple[Series, ...]


@dataclass(frozen=True)
class Forecast:
    """The next step of one series for one person."""

    series: Series
    status: str                          # due | overdue | complete
    dose_number: int | None = None       # rank of the next dose among all doses of the series
    series_doses: int | None = None      # number of doses of the primary series (None for boosters)
    due: date | None = None
    overdue_from: date | None = None
    dose: Dose | None = None
    booster: bool = False
    mandatory: bool = False

    @property
    def label(self) -> str:
        if self.dose is None:
            return self.series.label
        if self.booster:
            return f"{self.series.label} — {self.dose.label or 'rappel'}"
        return f"{self.series.label} — dose {self.dose_number} sur {self.series_doses}"


# -- loading --------------------------------------------------------------------------------------

def _vaccine(data: dict) -> Vaccine:
    return Vaccine(data["atc"], data.get("display", data["atc"]))


def _dose(data: dict) -> Dose:
    return Dose(age=duration(data["age"]), vaccine=_vaccine(data["vaccine"]), label=data.get("label", ""),
                min_interval=duration(data["minInterval"]) if data.get("minInterval") else relativedelta(),
                until=duration(data["until"]) if data.get("until") else None,
                mandatory=bool(data.get("mandatory")))


def _day(text: str | None) -> date | None:
    return date.fromisoformat(text) if text else None


def _optional_duration(data: dict, key: str) -> relativedelta | None:
    return duration(data[key]) if data.get(key) else None


def _series(data: dict) -> Series:
    primary = data.get("primary") or {}
    boosters = data.get("boosters") or {}
    matches = data.get("matches") or {}
    return Series(
        id=data["id"], label=data["label"],
        target_diseases=tuple((d["code"], d["display"]) for d in data.get("targetDisease", ())),
        atc=frozenset(matches.get("atc", ())), cis=frozenset(matches.get("cis", ())),
        born_from=_day(data.get("bornFrom")), born_before=_day(data.get("bornBefore")),
        mandatory_born_from=_day(data.get("mandatoryBornFrom")),
        overdue_after=duration(data.get("overdueAfter", "P1M")),
        primary=tuple(_dose(d) for d in primary.get("doses", ())),
        catch_up_until=_optional_duration(primary, "catchUpUntil"),
        complete_with_dose_from=_optional_duration(primary, "completeWithDoseFrom"),
        boosters=tuple(_dose(d) for d in boosters.get("doses", ())),
        booster_min_interval=_optional_duration(boosters, "minInterval") or relativedelta(),
        booster_overdue_after=_optional_duration(boosters, "overdueAfter") or relativedelta(years=1),
        then_every=_optional_duration(boosters, "thenEvery"),
        then_vaccine=_vaccine(boosters["thenVaccine"]) if boosters.get("thenVaccine") else None,
    )


def parse_calendar(data: dict) -> Calendar:
    return Calendar(version=data.get("version", ""), title=data.get("title", ""), systems=dict(data["codeSystems"]),
                    series=tuple(_series(s) for s in data["series"]))


@functools.cache
def load_calendar(path: Path = CALENDAR_FILE) -> Calendar:
    return parse_calendar(json.loads(path.read_text(encoding="utf-8")))


# -- forecasting ----------------------------------------------------------------------------------

def forecast(series: Series, birth: date, doses: Iterable[date], on: date) -> Forecast | None:
    """The next step of `series` for a person born on `birth` who received `doses` (dates), as
    seen on `on`; None when the series does not apply (birth cohort, or catch-up age passed)."""
    if not series.applies_to(birth):
        return None
    given = sorted({d for d in doses if d >= birth})
    primary = _primary_forecast(series, birth, given, on)
    if primary is not None:
        return primary
    if series.boosters:
        return _booster_forecast(series, birth, given, on)
    if _primary_complete(series, birth, given):
        return Forecast(series, "complete")
    return None


def _primary_complete(series: Series, birth: date, given: list[date]) -> bool:
    if len(given) >= len(series.primary):
        return True
    single = series.complete_with_dose_from
    return single is not None and any(d >= birth + single for d in given)


def _primary_forecast(series: Series, birth: date, given: list[date], on: date) -> Forecast | None:
    """The next primary dose, or None when the primary series is complete or its catch-up age
    has passed (boosters then take over)."""
    if not series.primary or _primary_complete(series, birth, given):
        return None
    if series.catch_up_until is not None and on >= birth + series.catch_up_until:
        return None
    dose = series.primary[len(given)]
    due = birth + dose.age
    if given:
        due = max(due, given[-1] + dose.min_interval)
    return _step(series, birth, dose, due, due + series.overdue_after, on, len(given) + 1, len(series.primary),
                 booster=False)


def _booster_ages(series: Series) -> list[tuple[relativedelta, Dose]]:
    """Every booster age, the listed ones then one every `thenEvery` up to a very old age."""
    ages = [(dose.age, dose) for dose in series.boosters]
    if series.then_every is None or not ages:
        return ages
    age, last = ages[-1]
    vaccine = series.then_vaccine or last.vaccine
    while True:
        age = age + series.then_every
        if age.years >= OLDEST_AGE_YEARS:
            return ages
        ages.append((age, Dose(age=age, vaccine=vaccine, label=f"Rappel de {age.years} ans")))


def _booster_forecast(series: Series, birth: date, given: list[date], on: date) -> Forecast | None:
    ages = _booster_ages(series)
    if given:
        # the first booster far enough after the last dose: a late booster counts for the
        # age it was meant for (French rule: catch up, then go back to the fixed ages)
        earliest = given[-1] + series.booster_min_interval
        candidates = [(age, dose) for age, dose in ages if birth + age >= earliest]
    else:
        # nothing recorded: the last booster age already reached is due now, else the next one
        reached = [(age, dose) for age, dose in ages if birth + age <= on]
        candidates = reached[-1:] or ages
    if not candidates:
        return None
    age, dose = candidates[0]
    due = birth + age
    overdue_from = birth + dose.until if dose.until else due + series.booster_overdue_after
    return _step(series, birth, dose, due, overdue_from, on, len(given) + 1, None, booster=True)


def _step(series: Series, birth: date, dose: Dose, due: date, overdue_from: date, on: date, number: int,
          of: int | None, *, booster: bool) -> Forecast:
    status = "overdue" if on >= overdue_from else "due"
    return Forecast(series, status, dose_number=number, series_doses=of, due=due, overdue_from=overdue_from,
                    dose=dose, booster=booster, mandatory=series.is_mandatory(birth, dose))

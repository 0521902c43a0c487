"""The French vaccination calendar table and the forecast read from it."""

from __future__ import annotations

import json
from datetime import date

import pytest

from fhir_server.vaccination.calendar import CALENDAR_FILE, duration, forecast, load_calendar, parse_calendar

CALENDAR = load_calendar()
SERIES = {s.id: s for s in CALENDAR.series}


def step(series: str, birth: str, doses: list[str], on: str):
    return forecast(SERIES[series], date.fromisoformat(birth), [date.fromisoformat(d) for d in doses],
                    date.fromisoformat(on))


def test_the_table_is_data_with_its_sources():
    data = json.loads(CALENDAR_FILE.read_text(encoding="utf-8"))
    assert "resourceType" not in data
    assert len(data["sources"]) >= 2 and all(s["title"] and s["publisher"] for s in data["sources"])
    assert {"dtp", "hib", "hepb", "pneumo", "menc", "menacwy", "menb", "ror", "hpv"} <= set(SERIES)


def test_adult_boosters_are_at_25_45_65_then_every_10_years():
    ages = [d.age.years for d in SERIES["dtp"].boosters]
    assert ages == [6, 11, 25, 45, 65]
    assert SERIES["dtp"].then_every.years == 10


@pytest.mark.parametrize(("text", "months"), [("P2M", 2), ("P11Y6M", 138), ("P1Y", 12)])
def test_durations(text, months):
    value = duration(text)
    assert value.years * 12 + value.months == months


@pytest.mark.parametrize("text", ["2M", "P", "PT2H", ""])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        duration(text)


def test_infant_doses_in_order_with_their_intervals():
    first = step("dtp", "2025-03-01", [], "2025-04-01")
    assert (first.status, first.dose_number, first.due) == ("due", 1, date(2025, 5, 1))
    assert first.mandatory
    late_second = step("dtp", "2025-03-01", ["2025-06-20"], "2025-07-01")    # 4 months, but 1 month after dose 1
    assert (late_second.dose_number, late_second.due) == (2, date(2025, 7, 20))
    overdue = step("pneumo", "2025-03-01", ["2025-05-01", "2025-07-01"], "2026-03-15")
    assert (overdue.status, overdue.dose_number) == ("overdue", 3)


def test_boosters_after_the_primary_series():
    child = step("dtp", "2019-02-01", ["2019-04-01", "2019-06-01", "2020-01-02"], "2024-06-01")
    assert (child.booster, child.dose.label, child.due) == (True, "Rappel de 6 ans", date(2025, 2, 1))


@pytest.mark.parametrize(("doses", "on", "label", "status"), [
    (["2001-01-01"], "2026-01-10", "Rappel de 45 ans", "overdue"),          # 25-year booster, 45 missed
    (["2020-05-01"], "2026-01-10", "Rappel de 65 ans", "due"),              # done at 44: the 45 one counts
    ([], "2026-01-10", "Rappel de 45 ans", "overdue"),                      # nothing known: last age reached
    (["2040-07-01"], "2041-01-10", "Rappel de 75 ans", "due"),              # after 65, every 10 years
])
def test_adult_boosters(doses, on, label, status):
    result = step("dtp", "1975-06-01", doses, on)
    assert (result.dose.label, result.status) == (label, status)
    assert not result.mandatory


def test_a_missing_primary_series_is_not_proposed_past_its_catch_up_age():
    assert step("hib", "2010-01-01", [], "2026-01-01") is None
    assert step("pneumo", "2023-01-01", ["2023-03-01"], "2026-01-01") is None


def test_one_dose_after_12_months_completes_meningococcus_c():
    assert step("menc", "2015-01-01", ["2016-03-01"], "2026-01-01").status == "complete"
    catch_up = step("menc", "2015-01-01", [], "2026-01-01")
    assert (catch_up.status, catch_up.dose_number) == ("overdue", 1)


@pytest.mark.parametrize(("series", "birth", "applies"), [
    ("menacwy", "2024-12-31", False), ("menacwy", "2025-01-01", True),
    ("menc", "2025-02-01", False), ("menc", "2018-02-01", True),
    ("ror", "1979-12-31", False), ("ror", "1980-01-01", True),
])
def test_birth_cohorts(series, birth, applies):
    assert (step(series, birth, [], "2026-01-01") is not None) is applies


def test_mandatory_only_for_the_cohorts_the_law_covers():
    assert step("menb", "2025-02-01", [], "2025-05-15").mandatory
    assert not step("menb", "2023-02-01", [], "2023-05-15").mandatory


def test_a_complete_series_without_boosters():
    assert step("ror", "2000-01-01", ["2001-01-10", "2001-06-01"], "2026-01-01").status == "complete"


def test_doses_before_birth_are_ignored():
    assert step("ror", "2020-01-01", ["2019-12-01", "2019-12-02"], "2021-02-01").dose_number == 1


def test_a_calendar_can_be_read_from_any_table():
    table = json.loads(CALENDAR_FILE.read_text(encoding="utf-8"))
    table["series"] = [s for s in table["series"] if s["id"] == "ror"]
    assert [s.id for s in parse_calendar(table).series] == ["ror"]

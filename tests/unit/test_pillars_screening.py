"""The organised screening programmes table and when the next screening is due."""

from __future__ import annotations

import json
from datetime import date

import pytest

from fhir_server.agenda.screening import PROGRAMMES_FILE, load_programmes, next_screening

PROGRAMMES = {p.id: p for p in load_programmes().programmes}


def due(programme: str, birth: str, gender: str, last: str | None, on: str):
    return next_screening(PROGRAMMES[programme], date.fromisoformat(birth), gender,
                          date.fromisoformat(last) if last else None, date.fromisoformat(on))


def test_the_table_is_data_with_its_sources():
    data = json.loads(PROGRAMMES_FILE.read_text(encoding="utf-8"))
    assert "resourceType" not in data
    assert all(s["title"] and s["publisher"] for s in data["sources"])
    assert set(PROGRAMMES) == {"colorectal", "breast", "cervical"}


@pytest.mark.parametrize(("programme", "gender", "birth", "expected"), [
    ("colorectal", "male", "1966-05-03", date(2026, 11, 25)),
    ("colorectal", "female", "1980-01-01", date(2030, 1, 1)),     # from 50
    ("colorectal", "male", "1950-01-01", None),                   # 76: past 74
    ("breast", "male", "1966-05-03", None),
    ("breast", "female", "1970-01-01", date(2026, 11, 25)),
    ("cervical", "female", "2003-01-01", date(2028, 1, 1)),       # from 25
    ("cervical", "female", "1958-01-01", None),                   # 68: past 65
    ("cervical", "unknown", "1990-01-01", None),
])
def test_first_screening(programme, gender, birth, expected):
    result = due(programme, birth, gender, None, "2026-11-25")
    assert (result.due if result else None) == expected


def test_the_interval_follows_the_last_screening():
    assert due("colorectal", "1966-05-03", "male", "2026-06-01", "2026-11-25").due == date(2028, 6, 1)
    # cervical: every 3 years before 30 (cytology), every 5 years after (HPV test)
    assert due("cervical", "2000-01-01", "female", "2026-01-10", "2026-11-25").due == date(2029, 1, 10)
    assert due("cervical", "1980-01-01", "female", "2026-01-10", "2026-11-25").due == date(2031, 1, 10)


def test_no_screening_is_due_after_the_last_age():
    assert due("breast", "1952-05-01", "female", "2025-06-01", "2026-11-25") is None      # 75 before 2027-06


def test_rounds_are_named_by_their_first_age():
    assert due("colorectal", "1974-02-10", "female", None, "2026-11-25").round_key == "colorectal/52ans"
    assert due("cervical", "1974-02-10", "female", None, "2026-11-25").round_key == "cervical/50ans"

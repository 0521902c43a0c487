"""Normalisation shared by indexing and querying: strings, dates, numbers, quantities."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest

from fhir_server.search.normalize import (
    DATE_MAX,
    canonical_quantity,
    date_range,
    fold,
    implicit_range,
    local_reference,
    prefix_range,
)


@pytest.mark.parametrize(("text", "folded"), [
    ("Élodie", "elodie"), ("HÉLÈNE", "helene"), ("Hélène", "helene"), ("Françoise", "francoise"),
    ("Cœur", "coeur"), ("  Jean   Pierre ", "jean pierre"), ("D'Artagnan", "d'artagnan"), ("Straße", "strasse"),
])
def test_fold(text: str, folded: str) -> None:
    assert fold(text) == folded


def test_prefix_range_is_an_index_range() -> None:
    assert prefix_range("dup") == {"$gte": "dup", "$lt": "duq"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


@pytest.mark.parametrize(("text", "low", "high"), [
    # partial dates cover their whole period, in the server timezone (Europe/Paris) when none is given
    ("2024", utc(2023, 12, 31, 23), utc(2024, 12, 31, 23)),
    ("2024-02", utc(2024, 1, 31, 23), utc(2024, 2, 29, 23)),
    ("2024-07-14", utc(2024, 7, 13, 22), utc(2024, 7, 14, 22)),              # summer time: UTC+2
    ("2024-12", utc(2024, 11, 30, 23), utc(2024, 12, 31, 23)),
    ("2024-07-14T10:00", utc(2024, 7, 14, 8), utc(2024, 7, 14, 8, 1)),
    ("2024-07-14T10:00:00Z", utc(2024, 7, 14, 10), utc(2024, 7, 14, 10, 0, 1)),
    ("2024-07-14T10:00:00+05:30", utc(2024, 7, 14, 4, 30), utc(2024, 7, 14, 4, 30, 1)),
    ("2024-07-14T10:00:00.250Z", utc(2024, 7, 14, 10, 0, 0, 250000), utc(2024, 7, 14, 10, 0, 0, 251000)),
    ("2024-07-14T10:00:00.1-03:00", utc(2024, 7, 14, 13, 0, 0, 100000), utc(2024, 7, 14, 13, 0, 0, 200000)),
])
def test_date_range(text: str, low: datetime, high: datetime) -> None:
    assert date_range(text) == (low, high)


def test_date_range_in_utc_and_at_the_end_of_time() -> None:
    assert date_range("2024-01-01", UTC) == (utc(2024, 1, 1), utc(2024, 1, 2))
    assert date_range("9999", UTC)[1] == DATE_MAX


@pytest.mark.parametrize("text", ["2024-13", "2024-02-30", "24", "2024-1-1", "yesterday", "2024-01-01T25:00",
                                  "2024-01-01T10:00:00+2"])
def test_invalid_dates(text: str) -> None:
    with pytest.raises(ValueError):
        date_range(text)


def test_implicit_range_follows_the_precision_written() -> None:
    assert implicit_range(Decimal("100")) == (Decimal("99.5"), Decimal("100.5"))
    assert implicit_range(Decimal("5.40")) == (Decimal("5.395"), Decimal("5.405"))
    assert implicit_range(Decimal("1E2")) == (Decimal("50"), Decimal("150"))


def test_canonical_quantity() -> None:
    ucum = "http://unitsofmeasure.org"
    assert canonical_quantity(Decimal("5"), ucum, "mg") == (Decimal("0.005"), "g")
    assert canonical_quantity(Decimal("2"), ucum, "dL") == (Decimal("0.2"), "L")
    assert canonical_quantity(Decimal("5"), "http://other", "mg") is None
    assert canonical_quantity(Decimal("5"), ucum, "[iU]") is None


def test_local_reference() -> None:
    assert local_reference("Patient/1/_history/4") == "Patient/1"
    assert local_reference("http://x.org/fhir/Patient/1") == "http://x.org/fhir/Patient/1"
    assert local_reference("#contained") is None
    assert local_reference("Patient?identifier=x|1") is None

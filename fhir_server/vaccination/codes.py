"""Code systems and small readers shared by the vaccination rules and the forecast."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime
from zoneinfo import ZoneInfo

ATC = "http://www.whocc.no/atc"
# CIS (code identifiant de spécialité, base de données publique des médicaments): the FR Core
# URL, and the OID form some French software still sends.
CIS_SYSTEMS = frozenset({"https://smt.esante.gouv.fr/terminologie-bdpm", "urn:oid:1.2.250.1.213.2.3.1"})
SNOMED = "http://snomed.info/sct"
LOINC = "http://loinc.org"
VACCINE_ATC_PREFIX = "J07"
RECOMMENDATION_STATUS = "http://terminology.hl7.org/CodeSystem/immunization-recommendation-status"
DATE_DUE = ("30980-7", "Date vaccine due")
DATE_OVERDUE = ("59778-1", "Date when overdue for immunization")
PARIS = ZoneInfo("Europe/Paris")


def today() -> date:
    """The calendar date in France: ages and due dates are counted in French days."""
    return datetime.now(PARIS).date()


def codings(concept: object) -> Iterator[tuple[int, dict]]:
    if not isinstance(concept, dict):
        return
    for index, coding in enumerate(concept.get("coding") or ()):
        if isinstance(coding, dict):
            yield index, coding


def day_of(value: object) -> date | None:
    """The calendar day of a FHIR date or dateTime (None for partial dates such as `2024-05`)."""
    if not isinstance(value, str) or len(value) < 10:
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None

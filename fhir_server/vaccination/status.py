"""`Patient/[id]/$vaccination-status`: what the French calendar recommends now and next for a
patient, from their age and the vaccinations recorded in their health space.

The answer is a Bundle (type collection) holding one ImmunizationRecommendation (not stored):
one `recommendation` per series of the calendar that applies, with `forecastStatus` due /
overdue / complete, the due date (LOINC 30980-7) and the date from which the dose is late
(LOINC 59778-1), the recommended vaccine (ATC) and the recorded doses it was computed from
(`supportingImmunization`). A due date after the evaluation date is the next step ("next"); one on
or before it is to be done now. Only what the caller may read is taken into account.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from fhir_server.engine.errors import bad_request, unprocessable
from fhir_server.engine.model import RequestContext, Result, instant, now
from fhir_server.engine.operations import OperationCall
from fhir_server.vaccination.calendar import Calendar, Forecast, forecast, load_calendar
from fhir_server.vaccination.codes import (
    ATC,
    DATE_DUE,
    DATE_OVERDUE,
    LOINC,
    RECOMMENDATION_STATUS,
    SNOMED,
    codings,
    day_of,
    today,
)

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

PAGE_SIZE = "1000"
MANDATORY_REASON = "Vaccination obligatoire (article L3111-2 du code de la santé publique)"


@dataclass(frozen=True)
class Evaluation:
    patient_id: str
    on: date
    forecasts: list[Forecast]
    supporting: dict[str, list[str]]       # series id -> "Immunization/id" counted for it


class VaccinationStatus:
    def __init__(self, server: FhirServer, calendar: Calendar | None = None) -> None:
        self.server = server
        self.calendar = calendar or load_calendar()

    def operation(self, call: OperationCall) -> Result:
        """The $vaccination-status handler."""
        on = evaluation_date(call)
        evaluation = self.evaluate(call.resource_id or "", call.ctx, on)
        return Result(200, self.bundle(evaluation))

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self, patient_id: str, ctx: RequestContext, on: date) -> Evaluation:
        """The forecast of every series of the calendar for one patient, on one day."""
        patient = self.server.interactions.read("Patient", patient_id, ctx).body or {}
        birth = day_of(patient.get("birthDate"))
        if birth is None:
            raise unprocessable(f"Patient/{patient_id} has no complete birthDate: the vaccination calendar "
                                "depends on age", "Patient.birthDate")
        doses: dict[str, list[date]] = {s.id: [] for s in self.calendar.series}
        supporting: dict[str, list[str]] = {s.id: [] for s in self.calendar.series}
        for immunization in self._given(patient_id, ctx):
            given = day_of(immunization.get("occurrenceDateTime"))
            if given is None or given > on:
                continue
            for series in self._series_of(immunization):
                doses[series].append(given)
                supporting[series].append(f"Immunization/{immunization['id']}")
        forecasts = []
        for series in self.calendar.series:
            step = forecast(series, birth, doses[series.id], on)
            if step is not None:
                forecasts.append(step)
        return Evaluation(patient_id, on, forecasts, supporting)

    def _given(self, patient_id: str, ctx: RequestContext) -> Iterator[dict]:
        """Every vaccination given to the patient that the caller may see, page after page."""
        params = [("patient", f"Patient/{patient_id}"), ("status", "completed"), ("_count", PAGE_SIZE)]
        while True:
            page = self.server.search_as(ctx, "Immunization", params)
            for entry in page.get("entry", ()):
                if (entry.get("search") or {}).get("mode", "match") == "match":
                    yield entry["resource"]
            following = next((link["url"] for link in page.get("link", ()) if link.get("relation") == "next"), None)
            if following is None:
                return
            params = parse_qsl(urlsplit(following).query, keep_blank_values=True)

    def _series_of(self, immunization: dict) -> list[str]:
        vaccine = [(c.get("system"), c.get("code")) for _, c in codings(immunization.get("vaccineCode"))]
        diseases = {c.get("code") for applied in immunization.get("protocolApplied") or ()
                    for concept in applied.get("targetDisease") or () for _, c in codings(concept)
                    if c.get("system") == SNOMED}
        return [s.id for s in self.calendar.series if s.counts(vaccine, diseases, self.calendar.systems)]

    # -- FHIR output ------------------------------------------------------------------------------
    def recommendation(self, evaluation: Evaluation) -> dict:
        """The evaluation as one ImmunizationRecommendation (with an id, not stored)."""
        return {
            "resourceType": "ImmunizationRecommendation",
            "id": str(uuid.uuid4()),
            "patient": {"reference": f"Patient/{evaluation.patient_id}"},
            "date": instant(now()),
            "authority": {"display": f"Calendrier des vaccinations {self.calendar.version} "
                                     "(ministère chargé de la santé)"},
            "recommendation": [_recommendation(f, evaluation.supporting[f.series.id]) for f in evaluation.forecasts]
            or [_nothing_applies()],
        }

    def bundle(self, evaluation: Evaluation) -> dict:
        recommendation = self.recommendation(evaluation)
        return {"resourceType": "Bundle", "type": "collection", "timestamp": instant(now()),
                "entry": [{"fullUrl": f"urn:uuid:{recommendation['id']}", "resource": recommendation}]}



def _recommendation(step: Forecast, supporting: list[str]) -> dict:
    series = step.series
    item: dict[str, Any] = {}
    if step.dose is not None:
        vaccine = step.dose.vaccine
        item["vaccineCode"] = [{"coding": [{"system": ATC, "code": vaccine.atc, "display": vaccine.display}],
                                "text": vaccine.display}]
    item["targetDisease"] = _target_disease(step)
    item["forecastStatus"] = {"coding": [{"system": RECOMMENDATION_STATUS, "code": step.status}]}
    if step.mandatory:
        item["forecastReason"] = [{"text": MANDATORY_REASON}]
    if step.due is not None and step.overdue_from is not None:
        item["dateCriterion"] = [_date_criterion(DATE_DUE, step.due), _date_criterion(DATE_OVERDUE, step.overdue_from)]
    item["description"] = step.label
    item["series"] = series.id
    if step.dose is not None and not step.booster:
        item["doseNumberPositiveInt"] = step.dose_number
        item["seriesDosesPositiveInt"] = step.series_doses
    if supporting:
        item["supportingImmunization"] = [{"reference": r} for r in supporting]
    return item


def _target_disease(step: Forecast) -> dict:
    """The series' diseases; a CodeableConcept's codings must mean the same thing, so several
    diseases (DTP, ROR) are given as text only."""
    diseases = step.series.target_diseases
    concept: dict[str, Any] = {"text": step.series.label}
    if len(diseases) == 1:
        code, display = diseases[0]
        concept["coding"] = [{"system": SNOMED, "code": code, "display": display}]
    return concept


def _date_criterion(kind: tuple[str, str], value: date) -> dict:
    code, display = kind
    return {"code": {"coding": [{"system": LOINC, "code": code, "display": display}]}, "value": value.isoformat()}


def _nothing_applies() -> dict:
    # recommendation is 1..*: say plainly that the calendar proposes nothing at this age
    return {"targetDisease": {"text": "Aucune vaccination du calendrier général à cet âge"},
            "forecastStatus": {"coding": [{"system": RECOMMENDATION_STATUS, "code": "complete"}]},
            "description": "Le calendrier général ne prévoit aucune vaccination pour ce patient à cette date"}


def evaluation_date(call: OperationCall) -> date:
    """`date` from the URL or a Parameters body (valueDate), today in France by default."""
    value = next((v for k, v in call.arguments if k == "date"), None)
    if value is None:
        return today()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise bad_request(f"date={value!r} must be a date (YYYY-MM-DD)", "date") from None

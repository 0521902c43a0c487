"""`POST Patient/[id]/$propose-reminders`: prevention reminders as `proposed` Appointments.

Two sources: the vaccinations the French calendar recommends (the same forecast as
`$vaccination-status`) and the national organised screening programmes by age and sex
(`terminology/screening-programmes.json`). A reminder is proposed when it is due before
`date + horizon` (parameters `date`, default today, and `horizon` in months, default 3).

Each reminder is an Appointment with status `proposed`, the patient as the only participant
(`needs-action`), the window in `requestedPeriod` (no start/end yet: nothing is booked), the kind in
`serviceType` (CodeSystem prevention-reminder) and a stable `identifier` naming the dose or the
screening round: asking again never duplicates a reminder, and a reminder the patient declined is
not proposed again for that dose or round. The patient accepts by updating it to `booked` with a
start and an end and their participant status `accepted`, or declines with `cancelled` /
`declined` (rules in `states.py`).

The answer is a Bundle (collection) of the reminders that apply now, new or already there.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from dateutil.relativedelta import relativedelta

from fhir_server.agenda.screening import Programme, Programmes, Screening, load_programmes, next_screening
from fhir_server.engine.errors import bad_request
from fhir_server.engine.model import RequestContext, Result, instant, now
from fhir_server.engine.operations import OperationCall
from fhir_server.vaccination.calendar import Forecast
from fhir_server.vaccination.codes import day_of
from fhir_server.vaccination.status import VaccinationStatus, evaluation_date

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

REMINDER_ID_SYSTEM = "https://espace.example.org/fhir/reminder"
DEFAULT_HORIZON_MONTHS = 3
MAX_HORIZON_MONTHS = 60
SHORTEST_WINDOW = relativedelta(months=1)
# Where the date of a screening already done is, by resource type.
DONE_ON = {
    "Observation": ("effectiveDateTime", "effectivePeriod", "effectiveInstant", "issued"),
    "DiagnosticReport": ("effectiveDateTime", "effectivePeriod", "issued"),
    "Procedure": ("performedDateTime", "performedPeriod"),
}


@dataclass(frozen=True)
class Reminder:
    """One reminder to propose: what, why, and the window to do it in."""

    key: str                      # stable identifier value (dose or screening round)
    code: str                     # prevention-reminder code
    display: str
    description: str
    comment: str
    start: date
    end: date


class ReminderProposer:
    def __init__(self, server: FhirServer, vaccination: VaccinationStatus,
                 programmes: Programmes | None = None) -> None:
        self.server = server
        self.vaccination = vaccination
        self.programmes = programmes or load_programmes()

    def operation(self, call: OperationCall) -> Result:
        on = evaluation_date(call)
        until = on + relativedelta(months=_horizon(call))
        patient_id = call.resource_id or ""
        patient = self.server.interactions.read("Patient", patient_id, call.ctx).body or {}
        reminders = [*self._vaccinations(patient_id, call.ctx, on, until),
                     *self._screenings(patient, call.ctx, on, until)]
        appointments = self._propose(patient_id, reminders, call.ctx, on)
        return Result(200, {"resourceType": "Bundle", "type": "collection", "timestamp": instant(now()),
                            "entry": [{"fullUrl": f"{call.ctx.base_url}/Appointment/{a['id']}", "resource": a}
                                      for a in appointments]})

    # -- what is due ------------------------------------------------------------------------------
    def _vaccinations(self, patient_id: str, ctx: RequestContext, on: date, until: date) -> Iterator[Reminder]:
        evaluation = self.vaccination.evaluate(patient_id, ctx, on)
        for step in evaluation.forecasts:
            if step.status in ("due", "overdue") and step.due is not None and step.due <= until:
                yield _vaccination_reminder(step, on, self.vaccination.calendar.version)

    def _screenings(self, patient: dict, ctx: RequestContext, on: date, until: date) -> Iterator[Reminder]:
        birth = day_of(patient.get("birthDate"))
        if birth is None:
            return
        for programme in self.programmes.programmes:
            last = self._last_screening(patient["id"], programme, ctx)
            screening = next_screening(programme, birth, patient.get("gender"), last, on)
            if screening is not None and screening.due <= until:
                yield _screening_reminder(screening, on)

    def _last_screening(self, patient_id: str, programme: Programme, ctx: RequestContext) -> date | None:
        """The latest screening the record shows: an attended reminder, or a coded result or act."""
        subject = f"Patient/{patient_id}"
        found = []
        attended = self._latest("Appointment", [
            ("patient", subject), ("service-type", f"{self.programmes.reminder_system}|{programme.reminder_code}"),
            ("status", "fulfilled")], ctx)
        if attended is not None:
            found.append(day_of(attended.get("start")))
        if programme.evidence:
            for resource_type, elements in DONE_ON.items():
                result = self._latest(resource_type, [("patient", subject), ("code", ",".join(programme.evidence))],
                                      ctx)
                if result is not None:
                    found.append(_done_on(result, elements))
        days = [d for d in found if d is not None]
        return max(days) if days else None

    def _latest(self, resource_type: str, params: list[tuple[str, str]], ctx: RequestContext) -> dict | None:
        # Searched as the caller: a result the caller may not see does not count (and cannot leak)
        page = self.server.search_as(ctx, resource_type, [*params, ("_sort", "-date"), ("_count", "1")])
        return next((e["resource"] for e in page.get("entry", ()) if (e.get("search") or {}).get("mode") != "outcome"),
                    None)

    # -- proposing --------------------------------------------------------------------------------
    def _propose(self, patient_id: str, reminders: list[Reminder], ctx: RequestContext, on: date) -> list[dict]:
        """Creates the missing reminders in one transaction; returns every reminder that applies."""
        appointments = []
        with self.server.store.transaction() as session:
            for reminder in reminders:
                condition = f"identifier={REMINDER_ID_SYSTEM}|{reminder.key}&patient=Patient/{patient_id}"
                appointment = _appointment(patient_id, reminder, self.programmes.reminder_system, on)
                result = self.server.interactions.create("Appointment", appointment, ctx,
                                                         if_none_exist=condition, session=session)
                appointments.append(result.body)
        return appointments


def _vaccination_reminder(step: Forecast, on: date, version: str) -> Reminder:
    assert step.due is not None and step.dose is not None and step.overdue_from is not None
    start = max(step.due, on)
    key_part = f"rappel-{step.dose.age.years}ans" if step.booster else f"dose-{step.dose_number}"
    vaccine = step.dose.vaccine
    return Reminder(
        key=f"vaccination/{step.series.id}/{key_part}", code="vaccination", display="Vaccination à faire",
        description=f"Vaccination : {step.label} (vaccin {vaccine.display})",
        comment=f"Proposé d'après le calendrier des vaccinations {version}"
                + (" ; vaccination obligatoire" if step.mandatory else ""),
        start=start, end=max(step.overdue_from, start + SHORTEST_WINDOW))


def _screening_reminder(screening: Screening, on: date) -> Reminder:
    programme = screening.programme
    start = max(screening.due, on)
    return Reminder(
        key=f"screening/{screening.round_key}", code=programme.reminder_code, display=programme.label,
        description=f"{programme.label} : {screening.band.test}",
        comment="Proposé d'après le programme national de dépistage organisé",
        start=start, end=max(screening.due + screening.band.every, start + SHORTEST_WINDOW))


def _appointment(patient_id: str, reminder: Reminder, system: str, on: date) -> dict:
    return {
        "resourceType": "Appointment",
        "identifier": [{"system": REMINDER_ID_SYSTEM, "value": reminder.key}],
        "status": "proposed",
        "serviceType": [{"coding": [{"system": system, "code": reminder.code,
                                     "display": reminder.display}]}],
        "description": reminder.description,
        "created": on.isoformat(),
        "comment": reminder.comment,
        "requestedPeriod": [{"start": reminder.start.isoformat(), "end": reminder.end.isoformat()}],
        "participant": [{"actor": {"reference": f"Patient/{patient_id}"}, "required": "required",
                         "status": "needs-action"}],
    }


def _done_on(resource: dict, elements: tuple[str, ...]) -> date | None:
    for element in elements:
        value = resource.get(element)
        if isinstance(value, dict):
            value = value.get("start") or value.get("end")
        day = day_of(value)
        if day is not None:
            return day
    return None


def _horizon(call: OperationCall) -> int:
    value = next((v for k, v in call.arguments if k == "horizon"), None)
    if value is None:
        return DEFAULT_HORIZON_MONTHS
    if not value.isdigit() or int(value) > MAX_HORIZON_MONTHS:
        raise bad_request(f"horizon={value!r} must be a number of months between 0 and {MAX_HORIZON_MONTHS}",
                          "horizon")
    return int(value)

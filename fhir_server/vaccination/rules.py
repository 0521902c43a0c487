"""Business rules of a vaccination record (Immunization), checked before every write.

Structure and profiles are the validator's job; these rules are what makes a vaccination record
usable for the calendar and for traceability:
- the vaccine is identified by a French CIS code (BDPM) or an ATC vaccine code (J07...);
- a vaccination given (`completed`) has a date that is neither in the future nor before birth;
- the vaccinator's own record (primary source) carries the lot number (traceability of batches);
- a vaccination not given (`not-done`) says why;
- a patient may add vaccinations to their record only as transcriptions (`primarySource` false)
  and may not alter what a professional recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import Any

from fhir_server.engine.errors import FhirError, error, unprocessable
from fhir_server.engine.interactions import WriteEvent
from fhir_server.vaccination.codes import ATC, CIS_SYSTEMS, VACCINE_ATC_PREFIX, codings, day_of, today

PatientReader = Callable[[WriteEvent, str], dict | None]


class ImmunizationRules:
    def __init__(self, read_patient: PatientReader, clock: Callable[[], date] = today) -> None:
        self.read_patient = read_patient
        self.clock = clock

    def __call__(self, event: WriteEvent) -> None:
        if event.resource_type != "Immunization":
            return
        _check_patient_actor(event)
        immunization = event.new
        if immunization is None:
            return
        if immunization.get("status") == "entered-in-error":
            return
        check_vaccine_code(immunization)
        check_dose_numbers(immunization)
        if immunization.get("status") == "not-done" and not immunization.get("statusReason"):
            raise unprocessable("A vaccination not given (status not-done) must say why in statusReason "
                                "(contra-indication, refusal, ...)", "Immunization.statusReason")
        if immunization.get("status") == "completed":
            self._check_occurrence(event, immunization)
            _check_lot_number(immunization)

    def _check_occurrence(self, event: WriteEvent, immunization: dict) -> None:
        given = day_of(immunization.get("occurrenceDateTime"))
        if given is None:
            return                      # occurrenceString ("enfance") or a partial date: kept as told
        if given > self.clock():
            raise unprocessable(f"A vaccination given on {given} is in the future: record it once it is done",
                                "Immunization.occurrence")
        reference = (immunization.get("patient") or {}).get("reference")
        patient = self.read_patient(event, reference) if isinstance(reference, str) else None
        birth = day_of((patient or {}).get("birthDate"))
        if birth is not None and given < birth:
            raise unprocessable(f"A vaccination given on {given} is before the patient's birth ({birth})",
                                "Immunization.occurrence")


def check_vaccine_code(immunization: dict) -> None:
    """At least one CIS or ATC coding, and those given are well-formed vaccine codes."""
    found = False
    for index, coding in codings(immunization.get("vaccineCode")):
        system, code = coding.get("system"), str(coding.get("code") or "")
        where = f"Immunization.vaccineCode.coding[{index}].code"
        if system in CIS_SYSTEMS:
            if not (len(code) == 8 and code.isdigit()):
                raise unprocessable(f"'{code}' is not a CIS code (8 digits, base de données publique des "
                                    "médicaments)", where)
            found = True
        elif system == ATC:
            if not code.startswith(VACCINE_ATC_PREFIX):
                raise unprocessable(f"ATC code '{code}' is not a vaccine (vaccines are J07...)", where)
            found = True
    if not found:
        raise unprocessable("The vaccine must be coded with its CIS code (https://smt.esante.gouv.fr/"
                            "terminologie-bdpm) or an ATC vaccine code (http://www.whocc.no/atc, J07...): the "
                            "vaccination calendar relies on it", "Immunization.vaccineCode")


def check_dose_numbers(immunization: dict) -> None:
    for index, applied in enumerate(immunization.get("protocolApplied") or ()):
        number, total = applied.get("doseNumberPositiveInt"), applied.get("seriesDosesPositiveInt")
        if isinstance(number, int) and isinstance(total, int) and number > total:
            raise unprocessable(f"Dose {number} of a series of {total} doses is impossible",
                                f"Immunization.protocolApplied[{index}].doseNumber")


def _check_lot_number(immunization: dict) -> None:
    if immunization.get("primarySource") is False or immunization.get("lotNumber"):
        return
    raise unprocessable("A vaccination recorded by its vaccinator (primarySource true) must carry the lot number "
                        "for traceability; a transcription from a paper record sets primarySource to false",
                        "Immunization.lotNumber")


def _check_patient_actor(event: WriteEvent) -> None:
    if _actor_kind(event) != "patient":
        return
    if event.old is not None and event.old.get("primarySource") is not False:
        raise error(403, "forbidden", "This vaccination was recorded by a professional: only a professional may "
                    "change it (ask them to correct it)")
    if event.new is not None and event.new.get("primarySource") is not False:
        raise unprocessable("A vaccination recorded by the patient is a transcription: set primarySource to "
                            "false (and reportOrigin, e.g. the vaccination booklet)", "Immunization.primarySource")


def _actor_kind(event: WriteEvent) -> str | None:
    access: Any = event.ctx.access
    actor = getattr(access, "actor", None)
    return getattr(actor, "kind", None)


def reader(interactions: Any) -> PatientReader:
    """Reads the vaccinated patient as the writer sees it, inside the write's transaction."""

    def read(event: WriteEvent, reference: str) -> dict | None:
        resource_type, _, resource_id = reference.rpartition("/")
        if resource_type.rsplit("/", 1)[-1] != "Patient" or not resource_id:
            return None
        try:
            return interactions.read("Patient", resource_id, event.ctx, event.session).body
        except FhirError:
            return None               # not visible: the access rules of the write decide
    return read

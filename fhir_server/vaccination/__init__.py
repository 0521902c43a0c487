"""Vaccination record (Immunization) and the French vaccination calendar.

- Write rules on Immunization (`rules.py`): vaccine coded in CIS or ATC, coherent dates, lot
  number for the vaccinator's own record, patients add transcriptions only.
- `Patient/[id]/$vaccination-status` (`status.py`): the calendar's forecast for the patient, as
  an ImmunizationRecommendation, computed from `terminology/vaccination-calendar.json`
  (`calendar.py`).
- Bulk feeds (a vaccination centre's day, a registry import) are ordinary batch or transaction
  Bundles of Immunizations: the same rules run on every entry and a batch reports each entry's
  outcome (see `bench/pillars.py` for the throughput).
- Search by patient, date, vaccine-code, status... is the core R4 SearchParameters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.engine.operations import Operation
from fhir_server.vaccination.rules import ImmunizationRules, reader
from fhir_server.vaccination.status import VaccinationStatus

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

STATUS_OPERATION = "https://espace.example.org/fhir/OperationDefinition/Patient-vaccination-status"


def install(server: FhirServer) -> None:
    server.interactions.write_rules.append(ImmunizationRules(reader(server.interactions)))
    status = VaccinationStatus(server)
    server.operations.register(Operation(
        name="vaccination-status", handler=status.operation, definition=STATUS_OPERATION,
        resource_types=("Patient",), type_level=False, instance=True,
        documentation="What the French vaccination calendar recommends now and next for the patient (Bundle "
                      "holding an ImmunizationRecommendation); parameter `date` = evaluation day (default today)"))

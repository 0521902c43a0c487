"""Agenda (Appointment, ANS GAP): states and moves, and prevention reminders.

- Search: the core R4 Appointment parameters (actor, date, status, service-type, identifier,
  patient, ...) and the GAP ones loaded from `profiles/search-parameters/` (`start` with ge/gt
  for the earliest start and le/lt for the latest, `created`, `description`, `priority`): nothing
  to register here.
- Write rule (`states.py`): only valid moves between states (409 on `Appointment.status`),
  times consistent with the state (422), a patient only accepts or declines in their own name.
- `POST Patient/[id]/$propose-reminders` (`reminders.py`): vaccination and screening reminders as
  `proposed` Appointments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.agenda.reminders import ReminderProposer
from fhir_server.agenda.states import check_appointment
from fhir_server.engine.operations import Operation
from fhir_server.vaccination.status import VaccinationStatus

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

REMINDERS_OPERATION = "https://espace.example.org/fhir/OperationDefinition/Patient-propose-reminders"


def install(server: FhirServer) -> None:
    server.interactions.write_rules.append(check_appointment)
    proposer = ReminderProposer(server, VaccinationStatus(server))
    server.operations.register(Operation(
        name="propose-reminders", handler=proposer.operation, definition=REMINDERS_OPERATION,
        resource_types=("Patient",), type_level=False, instance=True, affects_state=True,
        documentation="Creates proposed Appointments for the vaccinations and organised screenings due before "
                      "date + horizon months (parameters `date`, `horizon`, default 3); never twice the same"))

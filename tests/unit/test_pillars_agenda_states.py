"""Appointment states: the moves allowed, and the rule as a write sees it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.access.actor import Actor
from fhir_server.access.policy import RequestAccess
from fhir_server.access.scopes import Scopes
from fhir_server.agenda.states import allowed, check_appointment
from fhir_server.engine.errors import FhirError
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
PATIENT = "Patient/p1"


@pytest.mark.parametrize(("old", "new", "ok"), [
    ("proposed", "booked", True), ("proposed", "pending", True), ("pending", "booked", True),
    ("booked", "arrived", True), ("booked", "fulfilled", True), ("booked", "noshow", True),
    ("booked", "cancelled", True), ("arrived", "fulfilled", True), ("checked-in", "arrived", True),
    ("fulfilled", "booked", False), ("cancelled", "booked", False), ("noshow", "booked", False),
    ("proposed", "fulfilled", False), ("proposed", "noshow", False), ("arrived", "booked", False),
    ("fulfilled", "entered-in-error", True), ("entered-in-error", "booked", False), ("booked", "booked", True),
])
def test_moves(old, new, ok):
    assert allowed(old, new) is ok


def event(old: dict | None, new: dict, actor: str | None = None) -> WriteEvent:
    ctx = RequestContext("http://x/fhir")
    if actor:
        ctx.access = RequestAccess(Actor(actor, "sub", Scopes.parse("patient/*.cruds")), patients=[PATIENT])
    return WriteEvent(ctx, "update" if old else "create", "Appointment", "a1", old, new, None, 1)


def appointment(status: str, start: str | None = None, participant_status: str = "needs-action") -> dict:
    resource = {"resourceType": "Appointment", "status": status,
                "participant": [{"actor": {"reference": PATIENT}, "status": participant_status},
                                {"actor": {"reference": "Practitioner/d1"}, "status": "accepted"}]}
    if start:
        resource.update(start=start, end=start.replace("T09", "T10"))
    return resource


def refused(old: dict | None, new: dict, actor: str | None = None) -> FhirError:
    with pytest.raises(FhirError) as caught:
        check_appointment(event(old, new, actor), NOW)
    return caught.value


def test_a_move_out_of_a_final_state_is_a_conflict():
    error = refused(appointment("cancelled", "2026-12-01T09:00:00Z"), appointment("booked", "2026-12-01T09:00:00Z"))
    assert error.status == 409 and error.issues[0].expression == ("Appointment.status",)


def test_a_future_appointment_is_not_yet_attended():
    error = refused(None, appointment("fulfilled", "2026-12-01T09:00:00Z"))
    assert error.status == 422


def test_a_scheduled_appointment_has_times():
    assert refused(None, appointment("booked")).issues[0].expression == ("Appointment.start",)


def test_the_patient_accepts_in_their_participant_status():
    old = appointment("proposed")
    check_appointment(event(old, appointment("booked", "2026-12-01T09:00:00Z", "accepted"), "patient"), NOW)
    error = refused(old, appointment("booked", "2026-12-01T09:00:00Z", "needs-action"), "patient")
    assert error.issues[0].expression == ("Appointment.participant[0].status",)


def test_the_patient_declines():
    check_appointment(event(appointment("proposed"), appointment("cancelled", None, "declined"), "patient"), NOW)


def test_the_patient_does_not_run_the_agenda():
    old = appointment("booked", "2026-11-01T09:00:00Z")
    assert refused(old, appointment("noshow", "2026-11-01T09:00:00Z"), "patient").status == 403


def test_a_professional_records_attendance():
    old = appointment("booked", "2026-11-01T09:00:00Z")
    check_appointment(event(old, appointment("fulfilled", "2026-11-01T09:00:00Z"), "practitioner"), NOW)

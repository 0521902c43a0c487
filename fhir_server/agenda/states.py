"""Appointment states (R4 AppointmentStatus) and the moves between them.

```
proposed ─┬─> pending ─┬─> booked ─┬─> arrived / checked-in ─> fulfilled
          │            │           ├─> fulfilled
waitlist ─┴────────────┘           ├─> noshow
                                   └─> cancelled
(any non-final state) ─> cancelled        (any state) ─> entered-in-error
```

`fulfilled`, `cancelled`, `noshow` and `entered-in-error` are final: a new appointment is made
instead of reviving an old one, so that the agenda's history stays true. Each write is checked
against the current state (a move that the state machine does not allow is a 409 conflict), and
the new state against the appointment's own content (422):
- `booked`, `arrived`, `checked-in`, `fulfilled` and `noshow` have a start and an end;
- a `noshow` or `fulfilled` appointment has started (one cannot miss or attend a future one);
- the patient, whoever they are, can only accept (`booked`) or decline (`cancelled`) and answer
  for themselves (their own participant status).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fhir_server.engine.errors import conflict, error, unprocessable
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import instant_or_none

FINAL = frozenset({"fulfilled", "cancelled", "noshow", "entered-in-error"})
MOVES: dict[str, frozenset[str]] = {
    "proposed": frozenset({"pending", "booked", "waitlist", "cancelled"}),
    "pending": frozenset({"booked", "waitlist", "cancelled"}),
    "waitlist": frozenset({"pending", "booked", "cancelled"}),
    "booked": frozenset({"arrived", "checked-in", "fulfilled", "noshow", "cancelled"}),
    "checked-in": frozenset({"arrived", "fulfilled", "cancelled"}),
    "arrived": frozenset({"fulfilled", "cancelled"}),
}
SCHEDULED = frozenset({"booked", "arrived", "checked-in", "fulfilled", "noshow"})
STARTED = frozenset({"fulfilled", "noshow"})
# What a patient may do with an appointment: accept it (booked) or decline it (cancelled).
PATIENT_MOVES = frozenset({("proposed", "booked"), ("pending", "booked"), ("waitlist", "booked"),
                           ("proposed", "cancelled"), ("pending", "cancelled"), ("waitlist", "cancelled"),
                           ("booked", "cancelled")})
# The patient's participant status that goes with their answer.
ANSWER = {"booked": "accepted", "cancelled": "declined"}


def allowed(old: str, new: str) -> bool:
    if old == new or new == "entered-in-error":
        return True
    return new in MOVES.get(old, frozenset())


def check_appointment(event: WriteEvent, moment: datetime | None = None) -> None:
    """The write rule: refuses impossible moves and inconsistent appointments."""
    if event.resource_type != "Appointment" or event.new is None:
        return
    new, old = event.new, event.old
    status = new.get("status")
    if _actor_kind(event) == "patient":        # who may do it comes before whether it can be done
        _check_patient_answer(event, old, new)
    if old is not None:
        _check_move(old.get("status"), status)
    _check_times(new, status, moment or datetime.now(UTC))


def _check_move(before: Any, after: Any) -> None:
    if not isinstance(before, str) or not isinstance(after, str) or allowed(before, after):
        return
    if before in FINAL:
        raise conflict(f"The appointment is {before}: that is final, it cannot become {after}. "
                       "Make a new appointment instead", "Appointment.status")
    possible = ", ".join(sorted(MOVES.get(before, ()))) or "none"
    raise conflict(f"An appointment cannot go from {before} to {after} (from {before}: {possible}, or "
                   "entered-in-error)", "Appointment.status")


def _check_times(appointment: dict, status: Any, moment: datetime) -> None:
    if status in SCHEDULED and not (appointment.get("start") and appointment.get("end")):
        raise unprocessable(f"A {status} appointment needs a start and an end (a proposed one gives its "
                            "requestedPeriod instead)", "Appointment.start")
    start = instant_or_none(appointment.get("start"))
    if status in STARTED and start is not None and start > moment:
        raise unprocessable(f"An appointment starting at {appointment['start']} is in the future: it cannot be "
                            f"{status} yet", "Appointment.status")


def _check_patient_answer(event: WriteEvent, old: dict | None, new: dict) -> None:
    """A patient answers an appointment: accept or decline, and only in their own name."""
    own = set(getattr(event.ctx.access, "patients", ()) or ())
    if old is not None:
        move = (old.get("status"), new.get("status"))
        if move[0] != move[1] and move not in PATIENT_MOVES:
            raise error(403, "forbidden", f"A patient can accept (booked) or decline (cancelled) an appointment, "
                        f"not move it from {move[0]} to {move[1]}", "Appointment.status")
        before = _participant_statuses(old)
        for index, participant in enumerate(new.get("participant") or ()):
            actor = _reference(participant)
            if actor not in own and before.get(actor) != participant.get("status"):
                raise error(403, "forbidden", f"A patient answers only for themselves, not for {actor}",
                            f"Appointment.participant[{index}].status")
        if move[0] != move[1]:
            _check_own_answer(new, own, ANSWER[move[1]])


def _check_own_answer(appointment: dict, own: set[str], expected: str) -> None:
    for index, participant in enumerate(appointment.get("participant") or ()):
        if _reference(participant) in own and participant.get("status") != expected:
            verb = "accepts" if expected == "accepted" else "declines"
            raise unprocessable(f"A patient who {verb} an appointment says so in their participant status "
                                f"({expected})", f"Appointment.participant[{index}].status")


def _participant_statuses(appointment: dict) -> dict[str | None, Any]:
    return {_reference(p): p.get("status") for p in appointment.get("participant") or ()}


def _reference(participant: dict) -> str | None:
    reference = (participant.get("actor") or {}).get("reference")
    return "/".join(reference.split("/")[-2:]) if isinstance(reference, str) else None


def _actor_kind(event: WriteEvent) -> str | None:
    return getattr(getattr(event.ctx.access, "actor", None), "kind", None)

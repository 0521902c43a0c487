"""Agenda: an adult's agenda with reminders (examples/agenda), GAP searches, the moves between
appointment states, and prevention reminders proposed, accepted and declined by the patient."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INS = "urn:oid:1.2.250.1.213.1.4.8"
REMINDER = "https://espace.example.org/fhir/CodeSystem/prevention-reminder"
CATHERINE_INS = "273063523804229"
SOPHIE_INS = "274027511200033"
DOCTOR_RPPS = "10003456786"
DOCTOR = {"reference": "Practitioner/exemple-medecin-generaliste"}
ON = "2026-11-25"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def person(patient_id: str, ins: str, gender: str, birth: str) -> dict:
    return {"resourceType": "Patient", "id": patient_id, "identifier": [{"system": INS, "value": ins}],
            "name": [{"family": patient_id.split("-")[-1].capitalize()}], "gender": gender, "birthDate": birth}


def appointment(status: str = "booked", start: str | None = "2026-12-15T09:00:00+01:00",
                end: str | None = "2026-12-15T09:20:00+01:00", patient: str = "exemple-patient-agenda") -> dict:
    resource = {"resourceType": "Appointment", "status": status,
                "serviceType": [{"text": "Consultation de médecine générale"}],
                "participant": [{"actor": {"reference": f"Patient/{patient}"}, "status": "accepted"},
                                {"actor": DOCTOR, "status": "accepted"}]}
    if start:
        resource["start"] = start
    if end:
        resource["end"] = end
    return resource


@pytest.fixture(scope="module")
def world(client):
    for name in ("patient-ins.json", "practitioner-rpps.json"):
        resource = example(name)
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    response = client.post("/fhir", json=example("agenda/agenda-adulte-rappels.json"))
    assert response.status_code == 200, response.text
    for resource in (person("agenda-sophie", SOPHIE_INS, "female", "1974-02-10"),
                     person("agenda-marc", "166057511200061", "male", "1966-05-03"),
                     person("agenda-lucie", "272037511200045", "female", "1972-03-01")):
        assert client.put(f"/fhir/Patient/{resource['id']}", json=resource).status_code in (200, 201)
    return client


@pytest.fixture(scope="module")
def doctor(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(DOCTOR_RPPS, "10"))


@pytest.fixture(scope="module")
def sophie(issuer_dir):
    return bearer(issuer_dir, patient_claims(SOPHIE_INS))


@pytest.fixture(scope="module")
def catherine(issuer_dir):
    return bearer(issuer_dir, patient_claims(CATHERINE_INS))


def matches(bundle: dict) -> list[dict]:
    return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


def create(client, resource: dict, headers: dict) -> dict:
    response = client.post("/fhir/Appointment", json=resource, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def move(client, resource: dict, headers: dict, **changes):
    return client.put(f"/fhir/Appointment/{resource['id']}", json={**resource, **changes}, headers=headers)


# -- GAP search -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "expected"), [
    ({"actor": "Practitioner/exemple-medecin-generaliste"}, {"exemple-agenda-consultation"}),
    ({"patient": "exemple-patient-agenda", "status": "booked"}, {"exemple-agenda-consultation", "exemple-rappel-sein"}),
    ({"patient": "exemple-patient-agenda", "date": "ge2026-12-01", "date ": "lt2026-12-31"},
     {"exemple-agenda-consultation"}),
    ({"patient": "exemple-patient-agenda", "start": "ge2027-01-01"}, {"exemple-rappel-sein"}),
    ({"patient": "exemple-patient-agenda", "start": "lt2027-01-01"}, {"exemple-agenda-consultation"}),
    ({"service-type": f"{REMINDER}|screening-colorectal", "patient": "exemple-patient-agenda"},
     {"exemple-rappel-colorectal"}),
    ({"identifier": "https://espace.example.org/fhir/reminder|vaccination/dtp/rappel-45ans"}, {"exemple-rappel-dtp"}),
    ({"patient": "exemple-patient-agenda", "status": "cancelled"}, {"exemple-rappel-col"}),
])
def test_gap_searches(world, doctor, params, expected):
    query = [(k.strip(), v) for k, v in params.items()]
    response = world.get("/fhir/Appointment", params=query, headers=doctor)
    assert response.status_code == 200, response.text
    assert {a["id"] for a in matches(response.json())} == expected


# -- states -----------------------------------------------------------------------------------------
def test_a_booked_appointment_is_attended(world, doctor):
    past = create(world, appointment(start="2026-03-02T10:00:00+01:00", end="2026-03-02T10:20:00+01:00"), doctor)
    assert move(world, past, doctor, status="arrived").status_code == 200
    arrived = world.get(f"/fhir/Appointment/{past['id']}").json()
    assert move(world, arrived, doctor, status="fulfilled").status_code == 200


@pytest.mark.parametrize(("first", "then"), [
    ("fulfilled", "booked"), ("cancelled", "booked"), ("noshow", "fulfilled"), ("entered-in-error", "booked"),
])
def test_a_final_state_stays_final(world, doctor, first, then):
    done = create(world, appointment(first, start="2026-03-02T10:00:00+01:00", end="2026-03-02T10:20:00+01:00"),
                  doctor)
    response = move(world, done, doctor, status=then)
    assert response.status_code == 409
    assert issue_expressions(response.json()) == ["Appointment.status"]
    assert "final" in response.text


def test_an_impossible_move_is_a_conflict(world, doctor):
    proposed = create(world, appointment("proposed", start=None, end=None), doctor)
    response = move(world, proposed, doctor, status="arrived", start="2026-12-15T09:00:00+01:00",
                    end="2026-12-15T09:20:00+01:00")
    assert response.status_code == 409
    assert issue_expressions(response.json()) == ["Appointment.status"]


def test_a_patch_is_held_to_the_same_moves(world, doctor):
    cancelled = create(world, appointment("cancelled"), doctor)
    headers = {**doctor, "Content-Type": "application/json-patch+json"}
    response = world.patch(f"/fhir/Appointment/{cancelled['id']}", headers=headers,
                           content=json.dumps([{"op": "replace", "path": "/status", "value": "booked"}]))
    assert response.status_code == 409


def test_a_future_appointment_cannot_be_missed(world, doctor):
    future = create(world, appointment(), doctor)
    response = move(world, future, doctor, status="noshow")
    assert response.status_code == 422
    assert issue_expressions(response.json()) == ["Appointment.status"]


def test_a_booked_appointment_has_its_times(world, doctor):
    response = world.post("/fhir/Appointment", json=appointment(end=None, start=None), headers=doctor)
    assert response.status_code == 422
    assert "Appointment.start" in issue_expressions(response.json())


def test_anything_can_be_entered_in_error(world, doctor):
    done = create(world, appointment("fulfilled", start="2026-03-02T10:00:00+01:00", end="2026-03-02T10:20:00+01:00"),
                  doctor)
    assert move(world, done, doctor, status="entered-in-error").status_code == 200


# -- reminders --------------------------------------------------------------------------------------
def propose(client, patient: str, headers: dict, **params) -> dict[str, dict]:
    response = client.post(f"/fhir/Patient/{patient}/$propose-reminders", params={"date": ON, **params},
                           headers=headers)
    assert response.status_code == 200, response.text
    return {a["identifier"][0]["value"]: a for a in (e["resource"] for e in response.json()["entry"])}


def test_reminders_for_a_woman_of_52(world, doctor):
    reminders = propose(world, "agenda-sophie", doctor)
    assert set(reminders) == {"screening/colorectal/52ans", "screening/breast/52ans", "screening/cervical/50ans",
                              "vaccination/dtp/rappel-45ans"}
    for reminder in reminders.values():
        assert reminder["status"] == "proposed"
        assert reminder["participant"] == [{"actor": {"reference": "Patient/agenda-sophie"}, "required": "required",
                                            "status": "needs-action"}]
        assert reminder["requestedPeriod"][0]["start"] == ON
        assert "start" not in reminder
    assert reminders["screening/breast/52ans"]["serviceType"][0]["coding"][0] == {
        "system": REMINDER, "code": "screening-breast", "display": "Dépistage organisé du cancer du sein"}
    assert "dTP" in reminders["vaccination/dtp/rappel-45ans"]["description"]


def test_asking_again_never_duplicates(world, doctor, sophie):
    first = propose(world, "agenda-sophie", doctor)
    again = propose(world, "agenda-sophie", sophie)          # the patient may ask too
    assert {k: a["id"] for k, a in again.items()} == {k: a["id"] for k, a in first.items()}
    found = world.get("/fhir/Appointment", params={"patient": "agenda-sophie", "_count": "100"}).json()
    assert len(matches(found)) == 4


def test_the_patient_accepts_and_declines(world, sophie):
    reminders = propose(world, "agenda-sophie", sophie)
    breast, cervical = reminders["screening/breast/52ans"], reminders["screening/cervical/50ans"]
    accepted = move(world, breast, sophie, status="booked", start="2027-01-14T10:30:00+01:00",
                    end="2027-01-14T11:00:00+01:00",
                    participant=[{**breast["participant"][0], "status": "accepted"}])
    assert accepted.status_code == 200, accepted.text
    declined = move(world, cervical, sophie, status="cancelled",
                    participant=[{**cervical["participant"][0], "status": "declined"}])
    assert declined.status_code == 200, declined.text
    again = propose(world, "agenda-sophie", sophie)
    assert again["screening/cervical/50ans"]["status"] == "cancelled"        # declined: not proposed again
    assert again["screening/breast/52ans"]["status"] == "booked"


def test_the_patient_says_so_in_their_participant_status(world, sophie):
    reminder = propose(world, "agenda-sophie", sophie)["screening/colorectal/52ans"]
    response = move(world, reminder, sophie, status="booked", start="2027-02-01T08:00:00+01:00",
                    end="2027-02-01T08:15:00+01:00")
    assert response.status_code == 422
    assert issue_expressions(response.json()) == ["Appointment.participant[0].status"]


def test_the_patient_only_accepts_or_declines(world, catherine):
    consultation = world.get("/fhir/Appointment/exemple-agenda-consultation").json()
    response = move(world, consultation, catherine, status="fulfilled")
    assert response.status_code == 403
    others = copy.deepcopy(consultation["participant"])
    others[1]["status"] = "declined"
    response = move(world, consultation, catherine, participant=others)
    assert response.status_code == 403
    assert issue_expressions(response.json()) == ["Appointment.participant[1].status"]


def test_reminders_for_a_man_of_60_follow_his_last_screening(world, doctor):
    reminders = propose(world, "agenda-marc", doctor)
    assert {k for k in reminders if k.startswith("screening/")} == {"screening/colorectal/60ans"}
    world.put("/fhir/Observation/agenda-marc-fit", json={
        "resourceType": "Observation", "id": "agenda-marc-fit", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "29771-3"}]},
        "subject": {"reference": "Patient/agenda-lucie"}, "effectiveDateTime": "2026-06-01",
        "valueCodeableConcept": {"text": "Négatif"}})
    lucie = propose(world, "agenda-lucie", doctor)
    assert "screening/colorectal/54ans" not in lucie                       # screened in June: next in 2028
    later = propose(world, "agenda-lucie", doctor, horizon="24")
    assert later["screening/colorectal/56ans"]["requestedPeriod"][0]["start"] == "2028-06-01"


def test_an_attended_screening_counts(world, doctor):
    world.put("/fhir/Appointment/agenda-lucie-mammo", json={
        **appointment("fulfilled", start="2026-02-10T09:00:00+01:00", end="2026-02-10T09:30:00+01:00",
                      patient="agenda-lucie"),
        "id": "agenda-lucie-mammo",
        "serviceType": [{"coding": [{"system": REMINDER, "code": "screening-breast"}]}]})
    assert not any(k.startswith("screening/breast/") for k in propose(world, "agenda-lucie", doctor))


@pytest.mark.parametrize(("method", "path", "params", "status_code"), [
    ("post", "Patient/agenda-sophie", {"horizon": "beaucoup"}, 400),
    ("post", "Patient/inconnu", {}, 404),
    ("get", "Patient/agenda-sophie", {}, 405),
])
def test_reminder_failures(world, doctor, method, path, params, status_code):
    response = getattr(world, method)(f"/fhir/{path}/$propose-reminders", params=params, headers=doctor)
    assert response.status_code == status_code


def test_a_patient_asks_only_for_themselves(world, sophie):
    response = world.post("/fhir/Patient/agenda-marc/$propose-reminders", headers=sophie)
    assert response.status_code == 404


def test_the_pillar_operations_are_in_the_capability_statement(world):
    statement = world.get("/fhir/metadata").json()
    operations = {r["type"]: {o["name"] for o in r.get("operation", [])} for r in statement["rest"][0]["resource"]}
    assert {"vaccination-status", "propose-reminders"} <= operations["Patient"]
    assert {"document", "import-cda"} <= operations["Composition"]

"""The patient's notifications: a Communication in the record for each new or replacing document,
each message, the first access of each professional and every emergency access."""

from __future__ import annotations

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from fhir_server.access.tokens import actor_from_claims
from fhir_server.mhd import canonical
from fhir_server.notify import codes
from tests.http.conftest import bearer
from tests.http.test_notify_support import (
    document,
    idle_worker_at_teardown,
    minimal_documents,
    notifications,
    patient_resource,
    practitioner_resource,
    use_fast_worker,
)

INS_A, INS_B = "284037512345640", "190017512345678"
DOCTOR, NURSE = "10000000101", "10000000102"


@pytest.fixture(scope="module", autouse=True)
def _minimal_documents():
    with minimal_documents():
        yield


@pytest.fixture(scope="module")
def world(client):
    use_fast_worker(client)
    for resource in (patient_resource("pat-a", INS_A), patient_resource("pat-b", INS_B),
                     practitioner_resource(DOCTOR), practitioner_resource(NURSE, "Petit")):
        response = client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status_code in (200, 201), response.text
    yield client.app.state.fhir
    idle_worker_at_teardown(client)


def create(client, resource: dict, headers: dict | None = None) -> dict:
    response = client.post(f"/fhir/{resource['resourceType']}", json=resource, headers=headers or {})
    assert response.status_code == 201, response.text
    return response.json()


def about(notification: dict) -> list[str]:
    return [a.get("reference") for a in notification.get("about", [])]


def text(notification: dict) -> str:
    return notification["payload"][0]["contentString"]


# -- documents ------------------------------------------------------------------------------------
def test_a_new_document_notifies_the_patient(client, world):
    added = create(client, document("pat-a", "Compte rendu de consultation"))
    [notification] = [n for n in notifications(client, "pat-a", codes.NEW_DOCUMENT)
                      if f"DocumentReference/{added['id']}" in about(n)]
    assert notification["subject"] == {"reference": "Patient/pat-a"}
    assert notification["recipient"] == [{"reference": "Patient/pat-a"}]
    assert text(notification) == "Un nouveau document a été ajouté à votre dossier : « Compte rendu de consultation »."
    codings = notification["category"][0]["coding"]
    assert {"system": codes.HL7_COMMUNICATION_CATEGORY, "code": "notification", "display": "Notification"} in codings


def test_a_replacing_document_notifies_once_as_a_replacement(client, world):
    first = create(client, document("pat-a", "Bilan v1"))
    second = create(client, document("pat-a", "Bilan v2", relatesTo=[
        {"code": "replaces", "target": {"reference": f"DocumentReference/{first['id']}"}}]))
    [replaced] = [n for n in notifications(client, "pat-a", codes.REPLACED_DOCUMENT)
                  if f"DocumentReference/{second['id']}" in about(n)]
    assert about(replaced) == [f"DocumentReference/{second['id']}", f"DocumentReference/{first['id']}"]
    assert text(replaced) == "Le document « Bilan v2 » remplace un document précédent de votre dossier."
    assert not [n for n in notifications(client, "pat-a", codes.NEW_DOCUMENT)
                if f"DocumentReference/{second['id']}" in about(n)]


def test_an_update_that_adds_replaces_notifies_but_an_ordinary_update_does_not(client, world):
    old = create(client, document("pat-a", "Ordonnance ancienne"))
    new = create(client, document("pat-a", "Ordonnance"))
    before = len(notifications(client, "pat-a"))
    ordinary = {**new, "description": "Ordonnance corrigée"}
    assert client.put(f"/fhir/DocumentReference/{new['id']}", json=ordinary).status_code == 200
    assert len(notifications(client, "pat-a")) == before
    replacing = {**ordinary, "relatesTo": [{"code": "replaces",
                                            "target": {"reference": f"DocumentReference/{old['id']}"}}]}
    assert client.put(f"/fhir/DocumentReference/{new['id']}", json=replacing).status_code == 200
    latest = notifications(client, "pat-a")
    assert len(latest) == before + 1
    assert latest[0]["category"][0]["coding"][0]["code"] == codes.REPLACED_DOCUMENT


def test_no_notification_for_a_document_invisible_to_the_patient(client, world):
    hidden = create(client, document("pat-a", "Annonce diagnostique", securityLabel=[{"coding": [{
        "system": codes.VISIBILITY_SYSTEM, "code": "INVISIBLE_PATIENT"}]}]))
    assert not [n for n in notifications(client, "pat-a") if f"DocumentReference/{hidden['id']}" in about(n)]


def test_no_notification_for_what_the_patient_adds_themselves(client, world, issuer_dir):
    # what the health space accepts from a patient: their own PDF, authored by them, in their name
    mine = document("pat-a", "Mes vaccins", author=[{"reference": "Patient/pat-a"}], context={"practiceSetting": {
        "coding": [{"system": canonical.PRODUCTEUR_NON_PS, "code": canonical.PATIENT_EXPRESSION}]}})
    mine["content"][0]["attachment"]["contentType"] = "application/pdf"
    own = create(client, mine, bearer(issuer_dir, patient_claims(INS_A)))
    assert not [n for n in notifications(client, "pat-a") if f"DocumentReference/{own['id']}" in about(n)]


def test_the_patient_reads_their_notifications_and_professionals_do_not(client, world, issuer_dir):
    create(client, document("pat-a", "Radiographie"))
    as_patient = client.get("/fhir/Communication", params={"recipient": "Patient/pat-a"},
                            headers=bearer(issuer_dir, patient_claims(INS_A))).json()
    assert any(codes.notification_code(e["resource"]) for e in as_patient.get("entry", []))
    as_doctor = client.get("/fhir/Communication", params={"recipient": "Patient/pat-a"},
                           headers=bearer(issuer_dir, practitioner_claims(DOCTOR, "10"))).json()
    assert not [e for e in as_doctor.get("entry", []) if codes.notification_code(e.get("resource"))]


# -- messages -------------------------------------------------------------------------------------
def message(patient_id: str, rpps: str) -> dict:
    return {"resourceType": "Communication", "status": "completed", "subject": {"reference": f"Patient/{patient_id}"},
            "sender": {"reference": f"Practitioner/ps-{rpps}", "display": "Dr Jean Durand"},
            "recipient": [{"reference": f"Patient/{patient_id}"}], "sent": "2026-01-05T10:00:00+01:00",
            "topic": {"text": "Résultats d'analyse"},
            "payload": [{"contentString": "Bonjour, vos résultats sont bons."}]}


def test_a_message_to_the_patient_notifies_them_once(client, world, issuer_dir):
    sent = create(client, message("pat-b", DOCTOR), bearer(issuer_dir, practitioner_claims(DOCTOR, "10")))
    related = [n for n in notifications(client, "pat-b") if f"Communication/{sent['id']}" in about(n)]
    assert [codes.notification_code(n) for n in related] == [codes.NEW_MESSAGE]
    assert text(related[0]) == "Vous avez reçu un nouveau message de Dr Jean Durand : « Résultats d'analyse »."
    # the notification is a Communication to the patient too, yet announces nothing itself
    assert not [n for n in notifications(client, "pat-b") if f"Communication/{related[0]['id']}" in about(n)]


def test_only_the_server_writes_notifications(client, world, issuer_dir):
    forged = {**message("pat-b", DOCTOR), "category": [codes.category(codes.NEW_DOCUMENT)]}
    response = client.post("/fhir/Communication", json=forged,
                           headers=bearer(issuer_dir, practitioner_claims(DOCTOR, "10")))
    assert response.status_code == 403, response.text


# -- accesses -------------------------------------------------------------------------------------
def doctor(rpps: str = DOCTOR, purpose: str = "TREAT"):
    return actor_from_claims({**practitioner_claims(rpps, "10", purpose_of_use=purpose), "name": "Dr Jean Durand"})


def test_first_access_of_a_professional_notifies_once(client, world):
    notifier = world.notifier
    written = notifier.on_access("Patient/pat-b", doctor(), emergency=False)
    assert len(written) == 1
    assert notifier.on_access("Patient/pat-b", doctor(), emergency=False) == []      # not the second time
    [notification] = [n for n in notifications(client, "pat-b", codes.FIRST_ACCESS) if n["id"] == written[0]]
    assert text(notification) == ("Le professionnel de santé Dr Jean Durand (RPPS 10000000101) a consulté votre "
                                  "dossier pour la première fois.")
    assert notification["about"] == [{"reference": f"Practitioner/ps-{DOCTOR}",
                                      "identifier": {"system": codes.RPPS_SYSTEM, "value": DOCTOR},
                                      "display": "Dr Jean Durand"}]
    assert len(notifier.on_access("pat-b", doctor(NURSE), emergency=False)) == 1     # another professional
    assert notifier.professionals_seen("Patient/pat-b") == [f"ps:{DOCTOR}", f"ps:{NURSE}"]


def test_patients_and_systems_do_not_count_as_professional_accesses(client, world):
    notifier = world.notifier
    patient = actor_from_claims(patient_claims(INS_B))
    assert notifier.on_access("Patient/pat-b", patient, emergency=False) == []
    assert notifier.on_access("Patient/pat-b", None, emergency=False) == []


def test_every_emergency_access_notifies(client, world):
    notifier = world.notifier
    emergency = doctor(purpose="ETREAT")
    first = notifier.on_access("Patient/pat-a", emergency, emergency=True)
    second = notifier.on_access("Patient/pat-a", emergency, emergency=False)    # ETREAT token: emergency too
    assert len(first) == len(second) == 1
    found = {n["id"]: n for n in notifications(client, "pat-a", codes.EMERGENCY_ACCESS)}
    assert set(first + second) <= set(found)
    assert "en urgence" in text(found[first[0]])
    # the emergency access was also the first: no separate first-access notification
    assert not [n for n in notifications(client, "pat-a", codes.FIRST_ACCESS)
                if (n.get("about") or [{}])[0].get("identifier", {}).get("value") == DOCTOR]


def test_reads_through_the_audit_path_notify_the_first_access(client, world, issuer_dir):
    """The integration the audit module makes: after an audited successful access, on_access for
    each patient concerned (here simplified to reads of a Patient)."""
    server = world

    def observe(event) -> None:
        actor = event.ctx.access.actor if event.ctx.access else None
        if event.status < 400 and event.resource_type == "Patient" and event.resource_id:
            server.notifier.on_access(f"Patient/{event.resource_id}", actor, emergency=bool(actor and
                                                                                           actor.is_emergency))

    server.access_observers.append(observe)
    try:
        headers = bearer(issuer_dir, practitioner_claims("10000000199", "10"))
        for _ in range(2):
            assert client.get("/fhir/Patient/pat-a", headers=headers).status_code == 200
    finally:
        server.access_observers.remove(observe)
    firsts = [n for n in notifications(client, "pat-a", codes.FIRST_ACCESS)
              if n["about"][0]["identifier"]["value"] == "10000000199"]
    assert len(firsts) == 1


def test_notifications_meet_the_espace_communication_profile(client, world):
    create(client, document("pat-a", "Profil"))
    notification = notifications(client, "pat-a")[0]
    profile = {"profile": "https://espace.example.org/fhir/StructureDefinition/espace-communication"}

    def errors(resource: dict) -> list[dict]:
        response = client.post("/fhir/Communication/$validate", params=profile, json=resource)
        assert response.status_code == 200, response.text
        return [i for i in response.json()["issue"] if i["severity"] in ("error", "fatal")]

    assert errors(notification) == []
    assert errors({k: v for k, v in notification.items() if k != "topic"})      # the profile is really checked

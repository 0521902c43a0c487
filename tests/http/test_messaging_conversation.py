"""Secure messaging: a professional–patient conversation (examples/messaging), who may open,
reply and write to whom, attachments, read receipts, sent messages that do not change, and the
searches of a mailbox, each as the right actor."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest

from fhir_server.access.devissuer import patient_claims, practitioner_claims
from tests.http.conftest import bearer, issue_expressions

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
INS = "urn:oid:1.2.250.1.213.1.4.8"
RPPS = "https://rpps.esante.gouv.fr"
ELODIE_INS, OTHER_INS = "284037512345640", "190017512345678"
BERTRAND_RPPS, CARDIO_RPPS, KINE_RPPS = "10003456786", "10004567890", "10005678901"
ELODIE = {"reference": "Patient/exemple-patient-ins"}
BERTRAND = {"reference": "Practitioner/exemple-medecin-generaliste"}
CARDIO = {"reference": "Practitioner/messagerie-cardiologue"}
KINE = {"reference": "Practitioner/messagerie-kine"}
OPENING = "Communication/exemple-conversation-resultats"


def example(name: str) -> dict:
    return json.loads((EXAMPLES / name).read_text(encoding="utf-8"))


def message(sender: dict, recipients: list[dict], text: str = "Bonjour", subject: dict = ELODIE,
            answers: str | None = None, **extra) -> dict:
    resource = {"resourceType": "Communication", "status": "completed", "subject": subject,
                "sent": "2026-11-22T10:00:00+01:00", "sender": sender, "recipient": recipients,
                "payload": [{"contentString": text}], **extra}
    if answers:
        resource["inResponseTo"] = [{"reference": answers}]
    else:
        resource.setdefault("topic", {"text": "Suivi"})
    return resource


def practitioner(practitioner_id: str, rpps: str, family: str) -> dict:
    return {"resourceType": "Practitioner", "id": practitioner_id, "identifier": [{"system": RPPS, "value": rpps}],
            "name": [{"family": family, "prefix": ["Dr"]}]}


@pytest.fixture(scope="module")
def world(client):
    for name in ("patient-ins.json", "practitioner-rpps.json"):
        resource = example(name)
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    for resource in (practitioner("messagerie-cardiologue", CARDIO_RPPS, "Lemoine"),
                     practitioner("messagerie-kine", KINE_RPPS, "Roussel"),
                     {"resourceType": "Patient", "id": "messagerie-autre",
                      "identifier": [{"system": INS, "value": OTHER_INS}]}):
        assert client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource).status_code in (200, 201)
    response = client.post("/fhir", json=example("messaging/conversation-medecin-patiente.json"))
    assert response.status_code == 200, response.text
    return client


@pytest.fixture(scope="module")
def bertrand(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(BERTRAND_RPPS, "10"))


@pytest.fixture(scope="module")
def cardio(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(CARDIO_RPPS, "10"))


@pytest.fixture(scope="module")
def kine(issuer_dir):
    return bearer(issuer_dir, practitioner_claims(KINE_RPPS, "70"))


@pytest.fixture(scope="module")
def elodie(issuer_dir):
    return bearer(issuer_dir, patient_claims(ELODIE_INS))


@pytest.fixture(scope="module")
def other_patient(issuer_dir):
    return bearer(issuer_dir, patient_claims(OTHER_INS))


def send(client, resource: dict, headers: dict):
    return client.post("/fhir/Communication", json=resource, headers=headers)


def sent(client, resource: dict, headers: dict) -> dict:
    response = send(client, resource, headers)
    assert response.status_code == 201, response.text
    return response.json()


def ids(client, params: dict, headers: dict | None = None) -> list[str]:
    response = client.get("/fhir/Communication", params=params, headers=headers or {})
    assert response.status_code == 200, response.text
    return [e["resource"]["id"] for e in response.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


# -- the example conversation -----------------------------------------------------------------------
def test_a_conversation_is_one_search(world, elodie):
    found = ids(world, {"conversation": OPENING, "_sort": "sent"}, elodie)
    assert found == ["exemple-conversation-resultats", "exemple-conversation-reponse"]
    assert ids(world, {"conversation": "exemple-conversation-resultats", "_sort": "sent"}, elodie) == found  # bare id


@pytest.mark.parametrize(("params", "expected"), [
    ({"sender": "Patient/exemple-patient-ins"}, {"exemple-conversation-reponse"}),
    ({"recipient": "Practitioner/exemple-cardiologue"}, {"exemple-conversation-avis-cardio"}),
    ({"patient": "exemple-patient-ins", "sent": "ge2026-11-21"}, {"exemple-conversation-avis-cardio"}),
    ({"patient": "exemple-patient-ins", "sent": "lt2026-11-21", "sender": "Practitioner/exemple-medecin-generaliste"},
     {"exemple-conversation-resultats"}),
])
def test_mailbox_searches(world, params, expected):
    assert set(ids(world, params)) & {"exemple-conversation-resultats", "exemple-conversation-reponse",
                                       "exemple-conversation-avis-cardio"} == expected


def test_another_patient_sees_none_of_it(world, other_patient):
    assert ids(world, {"conversation": OPENING}, other_patient) == []


# -- who opens, who replies -------------------------------------------------------------------------
def test_a_professional_opens_and_the_patient_replies(world, bertrand, elodie):
    opening = sent(world, message(BERTRAND, [ELODIE], "Votre ordonnance est prête."), bertrand)
    reply = sent(world, message(ELODIE, [BERTRAND], "Merci !", answers=f"Communication/{opening['id']}",
                                sent="2026-11-22T18:30:00+01:00"), elodie)
    assert ids(world, {"conversation": f"Communication/{opening['id']}", "_sort": "sent"}, elodie) == \
        [opening["id"], reply["id"]]


def test_a_patient_cannot_open_a_conversation(world, elodie):
    response = send(world, message(ELODIE, [BERTRAND], "Bonjour docteur"), elodie)
    assert response.status_code == 403
    assert "Only a health professional can start a conversation" in response.text


def test_professionals_write_to_each_other_about_a_patient(world, bertrand, cardio, elodie):
    opening = sent(world, message(BERTRAND, [CARDIO], "Avis sur le bilan lipidique ?"), bertrand)
    sent(world, message(CARDIO, [BERTRAND], "Statine à discuter.", answers=f"Communication/{opening['id']}"), cardio)
    response = send(world, message(ELODIE, [BERTRAND], "Et moi ?", answers=f"Communication/{opening['id']}"), elodie)
    assert response.status_code == 403
    assert "only reply in a conversation a professional opened with them" in response.text


def test_a_patient_writes_only_to_the_participants(world, elodie):
    response = send(world, message(ELODIE, [KINE], "Bonjour", answers=OPENING), elodie)
    assert response.status_code == 403
    assert issue_expressions(response.json()) == ["Communication.recipient[0]"]


def test_everyone_writes_in_their_own_name(world, bertrand, elodie):
    as_doctor = send(world, message(BERTRAND, [BERTRAND], answers=OPENING), elodie)
    as_colleague = send(world, message(CARDIO, [ELODIE]), bertrand)
    for response in (as_doctor, as_colleague):
        assert response.status_code == 403
        assert issue_expressions(response.json()) == ["Communication.sender"]
    # as another patient: refused already by the access policy (a patient writes to their own record)
    assert send(world, message({"reference": "Patient/messagerie-autre"}, [BERTRAND], answers=OPENING),
                elodie).status_code == 403


def test_a_reply_names_the_first_message(world, elodie):
    response = send(world, message(ELODIE, [BERTRAND], answers="Communication/exemple-conversation-reponse"), elodie)
    assert response.status_code == 422
    assert OPENING in response.text
    assert issue_expressions(response.json()) == ["Communication.inResponseTo"]


def test_a_reply_stays_about_the_same_patient(world, bertrand):
    other = {"reference": "Patient/messagerie-autre"}
    response = send(world, message(BERTRAND, [CARDIO], subject=other, answers=OPENING), bertrand)
    assert response.status_code == 422
    assert issue_expressions(response.json()) == ["Communication.subject"]


@pytest.mark.parametrize(("changes", "where"), [
    ({"subject": None}, "Communication.subject"),
    ({"sender": None}, "Communication.sender"),
    ({"recipient": []}, "Communication.recipient"),
    ({"payload": []}, "Communication.payload"),
    ({"sent": None}, "Communication.sent"),
    ({"recipient": [{"reference": "Patient/messagerie-autre"}]}, "Communication.recipient[0]"),
    ({"received": "2026-11-22T11:00:00+01:00"}, "Communication.received"),
])
def test_a_message_has_what_a_message_needs(world, bertrand, changes, where):
    resource = {k: v for k, v in {**message(BERTRAND, [ELODIE]), **changes}.items() if v not in (None, [])}
    response = send(world, resource, bertrand)
    assert response.status_code == 422, response.text
    assert issue_expressions(response.json()) == [where]


# -- attachments ------------------------------------------------------------------------------------
def shared_document(client, patient: str, document_id: str) -> str:
    """A document of the patient's space (PDSm fiche), with its content in a Binary."""
    data = b"Compte rendu de consultation"
    serial = int(hashlib.sha1(document_id.encode()).hexdigest()[:8], 16)
    binary = {"resourceType": "Binary", "id": f"{document_id}-contenu", "contentType": "text/plain",
              "securityContext": {"reference": f"DocumentReference/{document_id}"},
              "data": base64.b64encode(data).decode()}
    assert client.put(f"/fhir/Binary/{binary['id']}", json=binary).status_code in (200, 201)
    author = {"resourceType": "Practitioner", "id": "auteur", "identifier": [{"system": RPPS, "value": BERTRAND_RPPS}]}
    document = {
        "resourceType": "DocumentReference", "id": document_id,
        "contained": [author, {"resourceType": "Patient", "id": "patient"}],
        "masterIdentifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:1.2.250.1.999.{serial}"},
        "status": "current", "type": {"coding": [{"system": "http://loinc.org", "code": "11488-4"}]},
        "category": [{"coding": [{"system": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument",
                                  "code": "10"}]}],
        "subject": {"reference": f"Patient/{patient}"}, "date": "2026-11-19T08:00:00+01:00",
        "author": [{"reference": "#auteur"}], "custodian": {"display": "Cabinet du Dr Bertrand"},
        "securityLabel": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
                                       "code": "N"}]}],
        "content": [{"attachment": {"contentType": "text/plain", "language": "fr-FR", "url": f"Binary/{binary['id']}",
                                    "size": len(data), "hash": base64.b64encode(hashlib.sha1(data).digest()).decode(),
                                    "title": "Compte rendu", "creation": "2026-11-19T08:00:00+01:00"},
                     "format": {"system": "https://mos.esante.gouv.fr/NOS/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode",
                                "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient"}}],
        "context": {"period": {"start": "2026-11-18"}, "facilityType": {"text": "Cabinet"},
                    "practiceSetting": {"text": "Médecine générale"}, "sourcePatientInfo": {"reference": "#patient"}},
    }
    response = client.put(f"/fhir/DocumentReference/{document_id}", json=document)
    assert response.status_code in (200, 201), response.text
    return f"DocumentReference/{document_id}"


def test_a_document_of_the_patient_is_attached(world, bertrand):
    document = shared_document(world, "exemple-patient-ins", "messagerie-cr-elodie")
    attached = message(BERTRAND, [ELODIE], "Ci-joint le compte rendu.")
    attached["payload"].append({"contentReference": {"reference": document}})
    sent(world, attached, bertrand)


@pytest.mark.parametrize(("payload", "why"), [
    ({"contentReference": {"reference": "DocumentReference/messagerie-cr-autre"}},
     "belongs to Patient/messagerie-autre"),
    ({"contentReference": {"reference": "Condition/x"}}, "Binary or a DocumentReference"),
    ({"contentReference": {"reference": "Binary/inexistant"}}, "does not exist"),
    ({"contentAttachment": {"contentType": "text/plain", "url": "Observation/x", "title": "x"}},
     "Binary or a DocumentReference"),
])
def test_only_documents_of_the_same_patient_are_attached(world, bertrand, payload, why):
    shared_document(world, "messagerie-autre", "messagerie-cr-autre")
    attached = message(BERTRAND, [ELODIE])
    attached["payload"].append(payload)
    response = send(world, attached, bertrand)
    assert response.status_code == 422
    assert issue_expressions(response.json()) == ["Communication.payload[1].content"]
    assert why in response.text


# -- receipts and sent messages -----------------------------------------------------------------------
def test_read_receipts(world, bertrand, elodie):
    note = sent(world, message(BERTRAND, [ELODIE], "Pensez au bilan."), bertrand)
    assert world.put(f"/fhir/Communication/{note['id']}", json={**note, "received": "2026-11-22T12:00:00+01:00"},
                     headers=bertrand).status_code == 403                      # the sender does not acknowledge
    early = world.put(f"/fhir/Communication/{note['id']}", json={**note, "received": "2026-11-22T09:00:00+01:00"},
                      headers=elodie)
    assert early.status_code == 422
    read = world.put(f"/fhir/Communication/{note['id']}", json={**note, "received": "2026-11-22T12:00:00+01:00"},
                     headers=elodie)
    assert read.status_code == 200, read.text
    again = world.put(f"/fhir/Communication/{note['id']}",
                      json={**read.json(), "received": "2026-11-23T08:00:00+01:00"}, headers=elodie)
    assert again.status_code == 409
    assert issue_expressions(again.json()) == ["Communication.received"]


def test_a_sent_message_is_not_rewritten(world, bertrand, elodie):
    note = sent(world, message(BERTRAND, [ELODIE], "Rendez-vous mardi."), bertrand)
    edited = world.put(f"/fhir/Communication/{note['id']}",
                       json={**note, "payload": [{"contentString": "Rendez-vous jeudi."}]}, headers=bertrand)
    assert edited.status_code == 409
    assert issue_expressions(edited.json()) == ["Communication.payload"]
    on_hold = world.put(f"/fhir/Communication/{note['id']}", json={**note, "status": "on-hold"}, headers=bertrand)
    assert on_hold.status_code == 409
    by_patient = world.put(f"/fhir/Communication/{note['id']}", json={**note, "status": "entered-in-error"},
                           headers=elodie)
    assert by_patient.status_code == 403
    withdrawn = world.put(f"/fhir/Communication/{note['id']}", json={**note, "status": "entered-in-error"},
                          headers=bertrand)
    assert withdrawn.status_code == 200


def test_messages_are_kept(world, bertrand, elodie):
    note = sent(world, message(BERTRAND, [ELODIE], "À supprimer ?"), bertrand)
    assert world.delete(f"/fhir/Communication/{note['id']}", headers=elodie).status_code == 403
    assert world.delete(f"/fhir/Communication/{note['id']}", headers=bertrand).status_code == 403
    assert world.delete(f"/fhir/Communication/{note['id']}").status_code in (200, 204)       # back-end system


def test_a_conversation_is_private_to_its_participants(world, kine):
    assert ids(world, {"conversation": OPENING}, kine) == []


def test_the_conversation_parameter_is_in_the_capability_statement(world):
    statement = world.get("/fhir/metadata").json()
    [communication] = [r for r in statement["rest"][0]["resource"] if r["type"] == "Communication"]
    assert {"name": "conversation", "type": "reference",
            "definition": "https://espace.example.org/fhir/SearchParameter/Communication-conversation"}.items() <= \
        next(p for p in communication["searchParam"] if p["name"] == "conversation").items()

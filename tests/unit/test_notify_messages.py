"""Which writes notify whom, and what the notification says (no database)."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_server.access.policy import INVISIBLE, RequestAccess
from fhir_server.engine.interactions import WriteEvent
from fhir_server.engine.model import RequestContext
from fhir_server.notify import codes, messages
from fhir_server.notify.notifier import notices_for_write

MOMENT = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


def event(resource: dict | None, old: dict | None = None, patients: list[str] | None = None,
          deny: list[str] | None = None, writer_patients: list[str] | None = None) -> WriteEvent:
    ctx = RequestContext(base_url="http://x/fhir")
    if writer_patients is not None:
        ctx.access = RequestAccess(actor=None, patients=writer_patients)
    source = resource or old
    acl = {"patients": patients or ["Patient/1"], "deny": deny or []}
    return WriteEvent(ctx, "create" if old is None else "update", source["resourceType"], source["id"], old,
                      resource, acl, 1 if old is None else 2)


def doc(doc_id: str = "d1", **extra) -> dict:
    return {"resourceType": "DocumentReference", "id": doc_id, "status": "current",
            "subject": {"reference": "Patient/1"}, "content": [{"attachment": {"title": "Bilan"}}], **extra}


def replacing(doc_id: str, target: str) -> dict:
    return doc(doc_id, relatesTo=[{"code": "replaces", "target": {"reference": target}}])


def test_new_document():
    [notice] = notices_for_write(event(doc()))
    assert (notice.code, notice.patient) == (codes.NEW_DOCUMENT, "Patient/1")
    assert notice.text == "Un nouveau document a été ajouté à votre dossier : « Bilan »."
    assert notice.about == [{"reference": "DocumentReference/d1"}]


def test_document_without_title():
    [notice] = notices_for_write(event({**doc(), "content": [{"attachment": {}}]}))
    assert notice.text == "Un nouveau document a été ajouté à votre dossier."


def test_replacement_on_create_and_on_update():
    [created] = notices_for_write(event(replacing("d2", "DocumentReference/d1")))
    assert created.code == codes.REPLACED_DOCUMENT
    assert created.about == [{"reference": "DocumentReference/d2"}, {"reference": "DocumentReference/d1"}]
    [updated] = notices_for_write(event(replacing("d2", "DocumentReference/d1"), old=doc("d2")))
    assert updated.code == codes.REPLACED_DOCUMENT
    # the same replacement again: nothing new
    assert notices_for_write(event(replacing("d2", "DocumentReference/d1"),
                                   old=replacing("d2", "DocumentReference/d1"))) == []


def test_no_document_notice():
    assert notices_for_write(event(doc(), old=doc())) == []                          # ordinary update
    assert notices_for_write(event(doc(status="entered-in-error"))) == []
    assert notices_for_write(event(doc(), deny=[INVISIBLE])) == []                    # hidden from the patient
    assert notices_for_write(event(doc(), writer_patients=["Patient/1"])) == []     # the patient wrote it
    assert notices_for_write(event(None, old=doc())) == []                           # deletion


def message(**extra) -> dict:
    return {"resourceType": "Communication", "id": "m1", "status": "completed",
            "subject": {"reference": "Patient/1"}, "sender": {"reference": "Practitioner/p", "display": "Dr A"},
            "recipient": [{"reference": "Patient/1"}, {"reference": "Practitioner/q"}], **extra}


def test_new_message():
    [notice] = notices_for_write(event(message()))
    assert (notice.code, notice.text) == (codes.NEW_MESSAGE, "Vous avez reçu un nouveau message de Dr A.")


def test_no_message_notice():
    assert notices_for_write(event(message(), old=message())) == []                  # receipt, withdrawal
    assert notices_for_write(event(message(recipient=[{"reference": "Practitioner/q"}]))) == []
    notification = messages.communication(messages.new_document("Patient/1", doc()), MOMENT)
    assert notices_for_write(event({**notification, "id": "n1"})) == []              # no recursion


def test_notification_communication():
    notice = messages.first_access("Patient/1", messages.ProfessionalInfo("123", "Dr B", "ps-123"))
    resource = messages.communication(notice, MOMENT)
    assert codes.notification_code(resource) == codes.FIRST_ACCESS
    assert resource["payload"] == [{"contentString": "Le professionnel de santé Dr B (RPPS 123) a consulté votre "
                                                     "dossier pour la première fois."}]
    assert resource["sent"] == "2026-03-01T09:30:00.000Z"
    assert resource["meta"]["security"][0]["code"] == "MASQUE_PS"
    assert resource["about"] == [{"reference": "Practitioner/ps-123",
                                  "identifier": {"system": codes.RPPS_SYSTEM, "value": "123"}, "display": "Dr B"}]


def test_professional_without_name():
    assert messages.ProfessionalInfo("123").sentence_subject() == "Le professionnel de santé de numéro RPPS 123"
    assert messages.ProfessionalInfo(None).sentence_subject() == "Un professionnel de santé"


def test_code_system_lists_every_code():
    system = codes.code_system()
    assert system["url"] == codes.NOTIFICATION_CATEGORY
    assert [c["code"] for c in system["concept"]] == list(codes.CONCEPTS)
    assert codes.notification_code(message()) is None

"""What the patient is told: the notification Communications, with a plain French sentence.

Pure functions of the triggering data; `Notifier` decides when to send them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from fhir_server.engine.model import instant
from fhir_server.notify import codes


@dataclass(frozen=True)
class Notice:
    """One notification to write: why, to whom, what it says and what it is about."""

    code: str                                   # a key of codes.CONCEPTS
    patient: str                                # "Patient/x"
    text: str                                   # the sentence the patient reads
    about: list[dict] = field(default_factory=list)   # References to what it concerns


# The health space itself, as the organisation that operates it: a message needs a professional
# sender (messaging rules), and the patient sees who speaks.
SENDER = {"type": "Organization", "identifier": {"system": codes.SERVICE_SYSTEM, "value": "espace"},
          "display": "Mon espace santé"}


def communication(notice: Notice, moment: datetime) -> dict:
    """The Communication stored in the record. It is masked from professionals (MASQUE_PS):
    it tells the patient about their record and about other professionals, which is no other
    professional's business."""
    resource: dict = {
        "resourceType": "Communication",
        "meta": {"security": [{"system": codes.VISIBILITY_SYSTEM, "code": "MASQUE_PS",
                               "display": "Masqué aux professionnels de santé"}]},
        "status": "completed",
        "category": [codes.category(notice.code)],
        # a topic, as every first message of a conversation has (espace-communication profile)
        "topic": {"text": codes.CONCEPTS[notice.code][0]},
        "subject": {"reference": notice.patient},
        "recipient": [{"reference": notice.patient}],
        "sender": dict(SENDER),
        "sent": instant(moment),
        "payload": [{"contentString": notice.text}],
    }
    if notice.about:
        resource["about"] = notice.about
    return resource


# -- documents ------------------------------------------------------------------------------------
def document_title(document: dict) -> str | None:
    """A readable name of a DocumentReference: description, attachment title, or type."""
    if document.get("description"):
        return document["description"]
    for content in document.get("content") or []:
        title = (content.get("attachment") or {}).get("title")
        if title:
            return title
    kind = document.get("type") or {}
    return kind.get("text") or next((c["display"] for c in kind.get("coding") or [] if c.get("display")), None)


def new_document(patient: str, document: dict) -> Notice:
    title = document_title(document)
    text = (f"Un nouveau document a été ajouté à votre dossier : « {title} »." if title
            else "Un nouveau document a été ajouté à votre dossier.")
    return Notice(codes.NEW_DOCUMENT, patient, text, [_reference_to(document)])


def replaced_document(patient: str, document: dict, replaced: list[str]) -> Notice:
    title = document_title(document)
    text = (f"Le document « {title} » remplace un document précédent de votre dossier." if title
            else "Un document de votre dossier a été remplacé par une nouvelle version.")
    about = [_reference_to(document), *({"reference": r} for r in replaced)]
    return Notice(codes.REPLACED_DOCUMENT, patient, text, about)


# -- accesses -------------------------------------------------------------------------------------
def first_access(patient: str, professional: ProfessionalInfo) -> Notice:
    text = f"{professional.sentence_subject()} a consulté votre dossier pour la première fois."
    return Notice(codes.FIRST_ACCESS, patient, text, [professional.reference()])


def emergency_access(patient: str, professional: ProfessionalInfo) -> Notice:
    text = (f"{professional.sentence_subject()} a accédé à votre dossier en urgence (procédure de bris de glace). "
            "Vous pouvez consulter l'historique des accès à votre dossier.")
    return Notice(codes.EMERGENCY_ACCESS, patient, text, [professional.reference()])


@dataclass(frozen=True)
class ProfessionalInfo:
    """Who accessed: the RPPS of the token, a name when known, the Practitioner when found."""

    rpps: str | None
    name: str | None = None
    practitioner_id: str | None = None

    def sentence_subject(self) -> str:
        if self.name and self.rpps:
            return f"Le professionnel de santé {self.name} (RPPS {self.rpps})"
        if self.name:
            return f"Le professionnel de santé {self.name}"
        if self.rpps:
            return f"Le professionnel de santé de numéro RPPS {self.rpps}"
        return "Un professionnel de santé"

    def reference(self) -> dict:
        reference: dict = {}
        if self.practitioner_id:
            reference["reference"] = f"Practitioner/{self.practitioner_id}"
        if self.rpps:
            reference["identifier"] = {"system": codes.RPPS_SYSTEM, "value": self.rpps}
        reference["display"] = self.name or (f"RPPS {self.rpps}" if self.rpps else "Professionnel de santé")
        return reference


# -- messages -------------------------------------------------------------------------------------
def new_message(patient: str, message: dict) -> Notice:
    sender = (message.get("sender") or {}).get("display")
    topic = (message.get("topic") or {}).get("text")
    text = f"Vous avez reçu un nouveau message de {sender}" if sender else "Vous avez reçu un nouveau message"
    text += f" : « {topic} »." if topic else "."
    return Notice(codes.NEW_MESSAGE, patient, text, [_reference_to(message)])


def _reference_to(resource: dict) -> dict:
    return {"reference": f"{resource['resourceType']}/{resource['id']}"}

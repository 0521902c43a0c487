"""The codes that mark a Communication as a notification to the patient, and their CodeSystem."""

from __future__ import annotations

NOTIFICATION_CATEGORY = "https://espace.example.org/fhir/CodeSystem/notification-category"
HL7_COMMUNICATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/communication-category"
SERVICE_SYSTEM = "https://espace.example.org/fhir/sid/service"
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
VISIBILITY_SYSTEM = ("https://mos.esante.gouv.fr/NOS/TRE_A07-StatutVisibiliteDocument/FHIR/"
                     "TRE-A07-StatutVisibiliteDocument")

NEW_DOCUMENT = "new-document"
REPLACED_DOCUMENT = "replaced-document"
FIRST_ACCESS = "first-access"
EMERGENCY_ACCESS = "emergency-access"
NEW_MESSAGE = "new-message"

# code -> (display, definition)
CONCEPTS: dict[str, tuple[str, str]] = {
    NEW_DOCUMENT: ("Nouveau document", "Un document a été ajouté au dossier du patient."),
    REPLACED_DOCUMENT: ("Document remplacé", "Un document du dossier a été remplacé par une nouvelle version."),
    FIRST_ACCESS: ("Premier accès d'un professionnel",
                   "Un professionnel de santé a accédé au dossier pour la première fois."),
    EMERGENCY_ACCESS: ("Accès en urgence", "Un professionnel a accédé au dossier en mode urgence (bris de glace)."),
    NEW_MESSAGE: ("Nouveau message", "Un message a été adressé au patient."),
}


def category(code: str) -> dict:
    """The Communication.category of a notification: our precise code, and the generic HL7 one
    so that clients unaware of our CodeSystem still recognise a notification."""
    return {"coding": [
        {"system": NOTIFICATION_CATEGORY, "code": code, "display": CONCEPTS[code][0]},
        {"system": HL7_COMMUNICATION_CATEGORY, "code": "notification", "display": "Notification"},
    ]}


def notification_code(resource: dict | None) -> str | None:
    """The notification code of a Communication, None when it is not one of our notifications."""
    if not resource or resource.get("resourceType") != "Communication":
        return None
    for concept in resource.get("category") or []:
        for coding in (concept or {}).get("coding") or []:
            if coding.get("system") == NOTIFICATION_CATEGORY and coding.get("code") in CONCEPTS:
                return coding["code"]
    return None


def code_system() -> dict:
    """The CodeSystem resource, for `terminology/` and the implementation guide."""
    return {
        "resourceType": "CodeSystem", "id": "notification-category", "url": NOTIFICATION_CATEGORY,
        "version": "0.1.0", "name": "NotificationCategory", "title": "Catégories de notification du patient",
        "status": "active", "experimental": False, "publisher": "Espace",
        "description": "Pourquoi le patient reçoit une notification de son espace de santé.",
        "caseSensitive": True, "content": "complete", "count": len(CONCEPTS),
        "concept": [{"code": code, "display": display, "definition": definition}
                    for code, (display, definition) in CONCEPTS.items()],
    }

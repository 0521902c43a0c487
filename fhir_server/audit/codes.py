"""Code systems and fixed codings of the AuditEvents we write (IHE BALP patterns inside the ANS
TDE profile). Kept in one place so that the builder, the summaries and the tests speak the same
vocabulary."""

from __future__ import annotations

# -- profiles and our own extensions ------------------------------------------------------------
TDE_PROFILE = "https://interop.esante.gouv.fr/ig/fhir/tde/StructureDefinition/tde-auditevent"
ESPACE = "https://espace.example.org/fhir"
CHAIN_URL = f"{ESPACE}/StructureDefinition/audit-chain"
# TDE allows at most two agents (user + client software), so the user's organisation cannot be a
# third BALP `userorg` agent: it rides on the user agent as this extension (valueReference).
ORGANIZATION_URL = f"{ESPACE}/StructureDefinition/audit-agent-organization"
SUMMARY_URL = f"{ESPACE}/StructureDefinition/access-summary"
CLIENT_ID_SYSTEM = f"{ESPACE}/sid/client-id"
TOKEN_SUBJECT_SYSTEM = f"{ESPACE}/sid/token-subject"
SERVER_SYSTEM = f"{ESPACE}/sid/server"

# -- identifier systems ---------------------------------------------------------------------------
RPPS_SYSTEM = "https://rpps.esante.gouv.fr"
INS_NIR_SYSTEM = "urn:oid:1.2.250.1.213.1.4.8"
# National structure identifier (IDNST): "1" + FINESS (also "3" + SIRET, ...), as TDE traces carry it.
STRUCTURE_SYSTEM = "urn:oid:1.2.250.1.71.4.2.2"
FINESS_PREFIX = "1"


def structure_id_of_finess(finess: str) -> str:
    return finess if len(finess) == 10 and finess.startswith(FINESS_PREFIX) else FINESS_PREFIX + finess


def finess_of_structure_id(structure_id: str) -> str:
    return structure_id[1:] if len(structure_id) == 10 and structure_id.startswith(FINESS_PREFIX) else structure_id

# -- code systems ---------------------------------------------------------------------------------
AUDIT_EVENT_TYPE = "http://terminology.hl7.org/CodeSystem/audit-event-type"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
RESTFUL_INTERACTION = "http://hl7.org/fhir/restful-interaction"
AUTHZ_SUBTYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType"
ENTITY_TYPE = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
OBJECT_ROLE = "http://terminology.hl7.org/CodeSystem/object-role"
PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
SOURCE_TYPE = "http://terminology.hl7.org/CodeSystem/security-source-type"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
BALP_ENTITY_TYPE = "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType"
PROFESSION_SYSTEM = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"


def coding(system: str, code: str, display: str | None = None) -> dict:
    value = {"system": system, "code": code}
    if display:
        value["display"] = display
    return value


REST = coding(AUDIT_EVENT_TYPE, "rest", "Restful Operation")
SECURITY_ALERT = coding(DCM, "110113", "Security Alert")
AUTHZ_CONSENT = coding(AUTHZ_SUBTYPE, "AuthZ-Consent")

APPLICATION = coding(DCM, "110150", "Application")
DESTINATION_ROLE = coding(DCM, "110152", "Destination Role ID")
SOURCE_ROLE = coding(DCM, "110153", "Source Role ID")
INFORMATION_RECIPIENT = coding(PARTICIPATION_TYPE, "IRCP", "information recipient")
AUTHOR = coding(PARTICIPATION_TYPE, "AUT", "author (originator)")
APPLICATION_SERVER = coding(SOURCE_TYPE, "4", "Application Server")

ENTITY_PERSON = coding(ENTITY_TYPE, "1", "Person")
ENTITY_SYSTEM_OBJECT = coding(ENTITY_TYPE, "2", "System Object")
ROLE_PATIENT = coding(OBJECT_ROLE, "1", "Patient")
ROLE_REPORT = coding(OBJECT_ROLE, "3", "Report")
ROLE_DOMAIN_RESOURCE = coding(OBJECT_ROLE, "4", "Domain Resource")
ROLE_QUERY = coding(OBJECT_ROLE, "24", "Query")
ENTITY_CONSENT = coding(RESOURCE_TYPES, "Consent")
ENTITY_REQUEST_ID = coding(BALP_ENTITY_TYPE, "XrequestId")

# Resource types whose instances are documents for the patient: BALP / MHD give them the "Report"
# role (MHD ITI-68 uses object-role#3 for the retrieved document); everything else is a
# "Domain Resource".
REPORT_TYPES = frozenset({"DocumentReference", "Binary", "Composition", "DiagnosticReport"})

PURPOSE_DISPLAY = {
    "TREAT": "treatment",
    "ETREAT": "Emergency Treatment",
    "HOPERAT": "healthcare operations",
    "PATRQT": "patient requested",
    "HPAYMT": "healthcare payment",
}

# TRE_G15 displays of the professions the access matrix knows, for readable audit trails.
PROFESSION_DISPLAY = {
    "10": "Médecin",
    "21": "Pharmacien",
    "40": "Chirurgien-Dentiste",
    "50": "Sage-Femme",
    "60": "Infirmier",
    "70": "Masseur-Kinésithérapeute",
    "91": "Orthophoniste",
}

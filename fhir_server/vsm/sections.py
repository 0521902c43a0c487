"""The sections of a medical summary (VSM, FR Patient Summary): LOINC codes, French titles, which
are mandatory and which resource types their entries may reference.

Mandatory sections (FR Patient Summary, `ips-section-not-empty`): problems, allergies,
medications, history of procedures, medical devices; each has entries or an `emptyReason`.
Source documents (e.g. the original CDA of an imported summary, which keeps what could not be
structured) are listed in their own section (55107-7). The entry types follow the profile
espace-vsm-composition, so that the business rule and the profile never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

LOINC = "http://loinc.org"
VSM_TYPE = "60591-5"
VSM_TITLE = "Synthèse médicale"
EMPTY_REASON = "http://terminology.hl7.org/CodeSystem/list-empty-reason"
SOURCE_DOCUMENTS = "55107-7"
VSM_DISPLAY = "Patient summary Document"        # the display of the profile's pattern


@dataclass(frozen=True)
class SectionKind:
    code: str
    display: str                     # the LOINC display (the profile's pattern)
    title: str                       # the French title shown to readers
    mandatory: bool
    entry_types: frozenset[str]      # empty: the section carries text only


def _kind(code: str, display: str, title: str, mandatory: bool, *types: str) -> SectionKind:
    return SectionKind(code, display, title, mandatory, frozenset(types))


# Entry types as in the profile espace-vsm-composition (profiles/espace/).
SECTIONS: dict[str, SectionKind] = {s.code: s for s in (
    _kind("11450-4", "Problem list - Reported", "Problèmes et pathologies", True, "Condition"),
    _kind("48765-2", "Allergies and adverse reactions Document", "Allergies et intolérances", True,
          "AllergyIntolerance"),
    _kind("10160-0", "History of Medication use Narrative", "Traitements", True, "MedicationStatement",
          "MedicationRequest"),
    _kind("47519-4", "History of Procedures Document", "Antécédents d'actes", True, "Procedure"),
    _kind("46264-8", "History of medical device use", "Dispositifs médicaux", True, "DeviceUseStatement", "Device"),
    _kind("11369-6", "History of Immunization Narrative", "Vaccinations", False, "Immunization"),
    _kind("10157-6", "History of family member diseases Narrative", "Antécédents familiaux", False,
          "FamilyMemberHistory"),
    _kind("44939-7", "Adverse events", "Événements indésirables", False, "AdverseEvent"),
    _kind("30954-2", "Relevant diagnostic tests/laboratory data Narrative", "Résultats d'examens", False,
          "Observation", "DiagnosticReport"),
    _kind("42348-3", "Advance healthcare directives", "Directives anticipées", False, "Consent", "DocumentReference"),
    _kind("44944-7", "Points de vigilance", "Points de vigilance", False),
    _kind("47420-5", "Functional status assessment note", "Statut fonctionnel", False, "Observation",
          "ClinicalImpression"),
    _kind("10162-6", "History of pregnancies Narrative", "Grossesses", False, "Observation"),
    _kind("18776-5", "Plan of care note", "Plan de soins", False, "CarePlan", "ServiceRequest",
          "ImmunizationRecommendation"),
    _kind("29762-2", "Social history Narrative", "Mode de vie", False, "Observation"),
    _kind("8716-3", "Vital signs", "Signes vitaux", False, "Observation"),
    _kind("10161-8", "Occupational history Narrative", "Facteurs de risque professionnels", False),
    # The source documents of the summary (FR Patient Summary sectionDocumentReference), e.g. the
    # original CDA of an imported summary, which holds what could not be structured.
    _kind(SOURCE_DOCUMENTS, "", "Documents sources", False, "DocumentReference"),
)}
MANDATORY = tuple(code for code, kind in SECTIONS.items() if kind.mandatory)


def loinc_code(concept: object) -> str | None:
    """The LOINC code of a CodeableConcept, if it has one."""
    if not isinstance(concept, dict):
        return None
    for coding in concept.get("coding") or ():
        if isinstance(coding, dict) and coding.get("system") == LOINC and isinstance(coding.get("code"), str):
            return coding["code"]
    return None


def is_vsm(resource: dict | None) -> bool:
    """A Composition (or DocumentReference) whose type is the medical summary (LOINC 60591-5)."""
    return bool(resource) and loinc_code(resource.get("type")) == VSM_TYPE


def section_code(code: str) -> dict:
    """The `code` of a section, coded in LOINC with the display the profile expects."""
    kind = SECTIONS.get(code)
    coding = {"system": LOINC, "code": code}
    if kind and kind.display:
        coding["display"] = kind.display
    return {"coding": [coding]}


def vsm_type() -> dict:
    return {"coding": [{"system": LOINC, "code": VSM_TYPE, "display": VSM_DISPLAY}], "text": VSM_TITLE}

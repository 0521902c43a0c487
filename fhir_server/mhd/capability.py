"""What the CapabilityStatement says about document sharing: the server plays the PDSm "Gestionnaire
de partage de documents" role (`instantiates`), and each resource says which MHD transaction it
serves and which search parameters that transaction needs. The resource entries, their
interactions, profiles and search parameters themselves are generated from what is registered
(engine/capabilities.py); this only adds the statements of conformance, the documentation and the
search-parameter combinations the ITI-67 / ITI-66 rule (find.py) requires."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from fhir_server.engine.capabilities import SearchCombination, with_search_combinations
from fhir_server.mhd import canonical
from fhir_server.mhd.find import MHD_LIST_PARAMETERS

REST_DOCUMENTATION = (
    "Partage de documents de santé (ANS PDSm on IHE MHD): ITI-65 Provide Document Bundle (transaction "
    f"claiming {canonical.PROVIDE_BUNDLE}), ITI-105 Simplified Publish (POST DocumentReference with the "
    "document in content.attachment.data), ITI-67 Find Document References, ITI-66 Find Document Lists, "
    "ITI-68 Retrieve Document (GET on content.attachment.url), metadata update by conditional PATCH "
    "(status, securityLabel, isArchived). A provide bundle may carry FHIR documents (Bundle of type document) "
    "as content, and file documents published earlier into new or existing folders.")
RESOURCE_DOCUMENTATION = {
    "DocumentReference": (
        "ITI-67: a search names the patient (patient or patient.identifier) and the status, else 400; "
        "author.given / author.family search the contained authors' names; the searchset carries its total "
        f"({canonical.FIND_DOCUMENTS_RESPONSE}). "
        "ITI-105: POST with the document inline; stored as a Binary plus a PDSm comprehensive entry and a "
        "submission set. Each entry carries an entryUUID (identifier use=official, urn:uuid:), assigned by the "
        "server when the source leaves it out; masterIdentifier and entryUUID are unique (409). Metadata update: "
        "PATCH DocumentReference?identifier=[system]|[value] (JSON Patch, XML Patch or FHIRPath Patch) changes "
        "status, securityLabel and the isArchived extension only (405 otherwise). A new version replaces an entry with "
        "relatesTo.code = replaces; DELETE (by the patient or an author) is the logical deletion."),
    "List": ("ITI-66: submission sets and folders; a search on MHD lists (with authorOrg, designationType, "
             "isArchived, sourceId, or code=submissionset / folder) names the patient and the status; "
             f"the searchset carries its total ({canonical.FIND_LISTS_RESPONSE})."),
    "Binary": ("ITI-68: the document in its own media type (streamed), or a Binary resource when FHIR JSON or "
               "XML is asked for; readable by whoever may read its DocumentReference."),
}
SEARCH_NOTES = {
    "DocumentReference": {"patient": "ITI-67: required (or patient.identifier)", "status": "ITI-67: required",
                          "author-given": "ITI-67: sent as author.given; given name of a contained author "
                                          "(Practitioner, Patient, RelatedPerson, or PractitionerRole's Practitioner)",
                          "author-family": "ITI-67: sent as author.family; family name of a contained author"},
    "List": {"patient": "ITI-66: required for MHD lists (or patient.identifier)",
             "status": "ITI-66: required for MHD lists",
             "authorOrg": "ITI-66: the ihe-authorOrg extension on List.source; a contained organisation is "
                          "searched by identifier (authorOrg:identifier=[system]|[value])"},
}


def amend_capability_statement(statement: dict) -> dict:
    """The generated statement, plus the PDSm server role and the MHD documentation."""
    amended = copy.deepcopy(statement)
    amended["instantiates"] = [*amended.get("instantiates", []), canonical.SERVER_CAPABILITY]
    amended["implementationGuide"] = [*amended.get("implementationGuide", []), canonical.IMPLEMENTATION_GUIDE]
    for rest in amended.get("rest", []):
        rest["documentation"] = " ".join(filter(None, [rest.get("documentation"), REST_DOCUMENTATION]))
        for interaction in rest.get("interaction", []):
            if interaction.get("code") == "transaction":
                interaction["documentation"] = f"ITI-65 Provide Document Bundle: {canonical.PROVIDE_BUNDLE}"
        for resource in rest.get("resource", []):
            _document_resource(resource)
    amended = with_search_combinations(amended, "DocumentReference", _document_combinations)
    return with_search_combinations(amended, "List", _list_combinations)


# ITI-67 / ITI-66 name the patient (`patient`, or chained: `patient.identifier`) and the status;
# entries fetched by id are a read, not a find.
FIND = SearchCombination(("patient", "status"))
BY_ID = SearchCombination(("_id",))


def _document_combinations(declared: Sequence[str]) -> Sequence[SearchCombination]:
    return FIND, BY_ID


def _list_combinations(declared: Sequence[str]) -> Sequence[SearchCombination]:
    """A List search is an ITI-66 one only with an MHD parameter: without one, any parameter alone
    will do (a combination has one required parameter at least: one per parameter)."""
    plain = [SearchCombination((name,), MHD_LIST_PARAMETERS) for name in declared
             if name not in MHD_LIST_PARAMETERS and name != "_id"]
    return FIND, BY_ID, *plain


def _document_resource(resource: dict) -> None:
    resource_type = resource.get("type")
    if resource_type in RESOURCE_DOCUMENTATION:
        resource["documentation"] = RESOURCE_DOCUMENTATION[resource_type]
    for param in resource.get("searchParam", []):
        note = SEARCH_NOTES.get(resource_type, {}).get(param.get("name"))
        if note:
            param["documentation"] = note

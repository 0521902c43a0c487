"""Canonical URLs and codes of the PDSm / MHD definitions this package implements (the
StructureDefinitions themselves are in `profiles/pdsm/`)."""

from __future__ import annotations

PDSM = "https://interop.esante.gouv.fr/ig/fhir/pdsm"
MHD = "https://profiles.ihe.net/ITI/MHD"
NOS = "https://mos.esante.gouv.fr/NOS"

# -- profiles -----------------------------------------------------------------------------------
COMPREHENSIVE_DOCUMENT = f"{PDSM}/StructureDefinition/pdsm-comprehensive-document-reference"
SIMPLIFIED_PUBLISH = f"{PDSM}/StructureDefinition/pdsm-simplified-publish"
SUBMISSION_SET = f"{PDSM}/StructureDefinition/pdsm-submissionset-comprehensive"
FOLDER = f"{PDSM}/StructureDefinition/pdsm-folder-comprehensive"
PROVIDE_BUNDLE = f"{PDSM}/StructureDefinition/pdsm-comprehensive-provide-document-bundle"
PATCH_PARAMETERS = f"{MHD}/StructureDefinition/IHE.MHD.Patch.Parameters"
FIND_DOCUMENTS_RESPONSE = f"{PDSM}/StructureDefinition/pdsm-find-documentreferences-comprehensive-response"
FIND_LISTS_RESPONSE = f"{PDSM}/StructureDefinition/pdsm-find-lists-response"
# A bundle claiming any of these is an ITI-65 Provide Document Bundle.
PROVIDE_BUNDLES = frozenset({
    PROVIDE_BUNDLE,
    f"{MHD}/StructureDefinition/IHE.MHD.Minimal.ProvideBundle",
    f"{MHD}/StructureDefinition/IHE.MHD.UnContained.Comprehensive.ProvideBundle",
    f"{MHD}/StructureDefinition/IHE.MHD.Comprehensive.ProvideBundle",
})

# -- extensions ---------------------------------------------------------------------------------
IS_ARCHIVED = f"{PDSM}/StructureDefinition/pdsm-ext-is-archived"
INTENDED_RECIPIENT = f"{PDSM}/StructureDefinition/pdsm-ext-intended-recipient"
SOURCE_ID = f"{MHD}/StructureDefinition/ihe-sourceId"
DESIGNATION_TYPE = f"{MHD}/StructureDefinition/ihe-designationType"
AUTHOR_ORG = f"{MHD}/StructureDefinition/ihe-authorOrg"

# -- capability ---------------------------------------------------------------------------------
SERVER_CAPABILITY = f"{PDSM}/CapabilityStatement/PDSm-GestionnaireDePartageDeDocuments"
IMPLEMENTATION_GUIDE = f"{PDSM}/ImplementationGuide/ans.fhir.fr.pdsm"

# -- code systems -------------------------------------------------------------------------------
LIST_TYPES = f"{MHD}/CodeSystem/MHDlistTypes"
SUBMISSIONSET_CODE, FOLDER_CODE = "submissionset", "folder"
MHD_IDENTIFIER_TYPE = f"{MHD}/CodeSystem/MHDIdentifierType"
ENTRY_UUID_CODE = "entryUUID"
PRODUCTEUR_NON_PS = f"{NOS}/TRE_A00-ProducteurDocNonPS/FHIR/TRE-A00-ProducteurDocNonPS"
PATIENT_EXPRESSION = "EXP_PATIENT"            # TRE_A00: the patient's own documents
VISIBILITY = f"{NOS}/TRE_A07-StatutVisibiliteDocument/FHIR/TRE-A07-StatutVisibiliteDocument"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
IHE_FORMAT = f"{NOS}/TRE_A11-IheFormatCode/FHIR/TRE-A11-IheFormatCode"
MIME_TYPE_SUFFICIENT = "urn:ihe:iti:xds:2017:mimeTypeSufficient"
RFC3986 = "urn:ietf:rfc:3986"

"""Document sharing in the patient's health space (the DMP): IHE MHD as profiled by ANS PDSm,
on the shared engine.

| transaction                      | how                                                            |
|----------------------------------|----------------------------------------------------------------|
| ITI-65 Provide Document Bundle   | a transaction, checked as a whole first (provide.py)           |
| folders, re-filing               | in provide bundles (folders.py)                                |
| FHIR documents as content        | Bundles of type document (fhir_documents.py)                   |
| ITI-105 Simplified Publish       | POST DocumentReference with data -> a provide bundle (publish.py) |
| ITI-67 / ITI-66 Find             | ordinary searches; patient + status required, author names (find.py) |
| ITI-68 Retrieve Document         | GET Binary, raw and streamed (content.py, rest/router.py)      |
| metadata update (PDSm flux 03)   | PATCH (JSON, XML, FHIRPath), judged by comparing versions (metadata.py) |
| replacement, deletion            | write rules and hooks (lifecycle.py)                           |
| access to a document's content   | the DocumentReference's `_acl` copied (binary_access.py)      |
| entryUUID, unique ids            | assigned in provide bundles (entry_uuid.py), claimed atomically (unique_ids.py) |

Definitions: profiles/pdsm/ (StructureDefinitions, MHD value sets), profiles/search-parameters/.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.engine.model import RequestContext
from fhir_server.mhd import canonical
from fhir_server.mhd.binary_access import BINARY_INDEXES, DOCUMENT_REFERENCE_INDEXES, BinaryAccessSync
from fhir_server.mhd.capability import amend_capability_statement
from fhir_server.mhd.config import MhdSettings
from fhir_server.mhd.content import BinaryContent
from fhir_server.mhd.engine_hooks import check_bundles_with, publish_inline_documents_with
from fhir_server.mhd.entry_uuid import check_entry_uuid
from fhir_server.mhd.find import require_patient_and_status, rewrite_find
from fhir_server.mhd.lifecycle import DocumentLifecycle
from fhir_server.mhd.metadata import check_metadata_update
from fhir_server.mhd.patient_documents import PatientDocuments
from fhir_server.mhd.profiles import ProfileCheck
from fhir_server.mhd.provide import ProvideBundleChecks
from fhir_server.mhd.publish import SimplifiedPublish
from fhir_server.mhd.unique_ids import UniqueIds
from fhir_server.storage.binaries import BinaryStore

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

PROFILES = [canonical.COMPREHENSIVE_DOCUMENT, canonical.SIMPLIFIED_PUBLISH, canonical.SUBMISSION_SET,
            canonical.FOLDER, canonical.PROVIDE_BUNDLE, canonical.PATCH_PARAMETERS, canonical.FIND_DOCUMENTS_RESPONSE,
            canonical.FIND_LISTS_RESPONSE]


def install(server: FhirServer, settings: MhdSettings | None = None) -> None:
    settings = settings or MhdSettings()
    interactions = server.interactions
    binaries = BinaryStore(server.store)
    content = BinaryContent(binaries, settings.inline_max_bytes)
    server.binary_content = content          # read by the Binary parts of rest/router.py
    profiles = ProfileCheck(server.definitions, getattr(server, "profile_validator", None))
    server.extra_indexes.setdefault("Binary", []).extend(BINARY_INDEXES)
    server.extra_indexes.setdefault("DocumentReference", []).extend(DOCUMENT_REFERENCE_INDEXES)
    server.startup_hooks += [binaries.ensure_collections, binaries.sweep, lambda: _prepare(profiles)]

    lifecycle = DocumentLifecycle(interactions, server.search.matching_ids, content)
    patients = PatientDocuments(settings)
    # Which paths a metadata update may touch is decided before the profiles are checked: a path
    # that may not change at all is a 405 whatever its new value.
    interactions.write_rules.insert(0, check_metadata_update)
    interactions.write_rules += [content.offload_large_content, lifecycle.check, patients.check, check_entry_uuid]
    unique = UniqueIds(server.store)
    server.startup_hooks.append(unique.keys.ensure)
    interactions.write_hooks += [content.commit_content, BinaryAccessSync(server.store).on_write, lifecycle.apply,
                                 unique.on_write]
    server.search_rules.append(require_patient_and_status)
    server.search_rewrites.append(rewrite_find)

    def read_resource(resource_type: str, resource_id: str, ctx: RequestContext) -> dict:
        return interactions.read(resource_type, resource_id, ctx).body or {}

    check_bundles_with(server.bundles, ProvideBundleChecks(profiles, content, read_resource,
                                                           server.search.matching_ids))
    publisher = SimplifiedPublish(profiles, server.bundles.process, server.search.matching_ids, interactions.read,
                                  settings, patients)
    publish_inline_documents_with(interactions, publisher.publish)
    server.capability_amendments.append(amend_capability_statement)


def _prepare(profiles: ProfileCheck) -> None:
    problems = profiles.prepare(PROFILES)
    if problems:
        raise RuntimeError(f"The PDSm profiles cannot be used: {problems}")


__all__ = ["amend_capability_statement", "install"]

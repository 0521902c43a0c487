"""Medical summary (VSM, FR Patient Summary): Composition rules, FHIR documents, CDA import.

- Write rule (`rules.py`) on every Composition of type LOINC 60591-5: mandatory sections, entries
  of the same patient, emptyReason (422 with the FHIRPath at fault).
- `Composition/[id]/$document` (`document.py`): the document Bundle; `persist=true` (POST) stores
  it and shares it as a DocumentReference (application/fhir+json, url Bundle/[id]).
- `POST Composition/$import-cda` (`importer.py`): a CDA R2 VSM into FHIR resources plus the
  original kept as Binary + DocumentReference.
- One current summary per patient (`sharing.py`): sharing a new one supersedes the previous
  DocumentReference; Compositions are never rewritten. The most recent summary Composition of a
  patient is `Composition?patient=...&type=http://loinc.org|60591-5&_sort=-date&_count=1`, the
  shared one `DocumentReference?patient=...&type=http://loinc.org|60591-5&status=current`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhir_server.engine.operations import Operation
from fhir_server.vsm.document import DocumentOperation
from fhir_server.vsm.importer import CdaImport
from fhir_server.vsm.rules import SummaryRules, patients_reader, reader

if TYPE_CHECKING:
    from fhir_server.server import FhirServer

# Ours, derived from the core Composition-document: instance level only, no `graph`.
DOCUMENT_OPERATION = "https://espace.example.org/fhir/OperationDefinition/Composition-document"
IMPORT_OPERATION = "https://espace.example.org/fhir/OperationDefinition/Composition-import-cda"


def install(server: FhirServer) -> None:
    patients_of = patients_reader(server.policy, server.search_registry)
    server.interactions.write_rules.append(SummaryRules(reader(server.interactions), patients_of))
    document = DocumentOperation(server, patients_of)
    server.operations.register(Operation(
        name="document", handler=document.operation, definition=DOCUMENT_OPERATION,
        resource_types=("Composition",), type_level=False, instance=True,
        documentation="The Composition as a FHIR document Bundle (every referenced resource included); "
                      "persist=true (POST) stores it and shares it as a DocumentReference"))
    importer = CdaImport(server)
    server.operations.register(Operation(
        name="import-cda", handler=importer.operation, definition=IMPORT_OPERATION,
        resource_types=("Composition",), type_level=True, affects_state=True,
        documentation="Imports a CDA R2 medical summary (VSM): coded entries become FHIR resources, the original "
                      "is kept (Binary + DocumentReference); body: Binary or Parameters(document)"))

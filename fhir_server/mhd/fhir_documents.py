"""FHIR documents as the content of a document entry (the FhirDocuments slice of ITI-65): a Bundle of
type `document` (e.g. a VSM) posted in the provide bundle, which the entry's `attachment.url` names
by its fullUrl, instead of a Binary. Once stored, the url reads `Bundle/[id]` (ITI-68 reads it).

Its `size` and SHA-1 `hash` are those of the document as submitted, serialized in the media type the
attachment declares: `application/fhir+json` as compact FHIR JSON (UTF-8, no whitespace between
tokens, members in the order sent), `application/fhir+xml` as FHIR XML (UTF-8, no indentation), which
is how this server writes them.
"""

from __future__ import annotations

import hashlib

from fhir_server.formats.json import dump_json
from fhir_server.formats.xml import resource_to_xml
from fhir_server.mhd.content import ContentFacts

JSON_TYPES = frozenset({"application/fhir+json", "application/json"})
XML_TYPES = frozenset({"application/fhir+xml", "application/xml"})
MEDIA_TYPES = JSON_TYPES | XML_TYPES


def is_fhir_document(resource: dict) -> bool:
    return resource.get("resourceType") == "Bundle" and resource.get("type") == "document"


def serialized(document: dict, media_type: str) -> bytes | None:
    """The document's bytes in `media_type` (None for a media type a FHIR document cannot have)."""
    if media_type in JSON_TYPES:
        return dump_json(document)
    if media_type in XML_TYPES:
        return resource_to_xml(document)
    return None


def document_facts(document: dict, media_type: str) -> ContentFacts | None:
    content = serialized(document, media_type)
    return None if content is None else ContentFacts(len(content), hashlib.sha1(content).digest())


def document_id(url: object) -> str | None:
    """`Bundle/abc` (or an absolute URL ending so) -> `abc`."""
    if not isinstance(url, str):
        return None
    head, _, resource_id = url.rpartition("/")
    return resource_id if resource_id and (head == "Bundle" or head.endswith("/Bundle")) else None

"""ITI-105 Simplified Publish: `POST DocumentReference` with the document inline in
`content.attachment.data`.

The posted entry must conform to the PDSm simplified-publish profile. The server then turns it
into what ITI-65 would have carried, and runs it as one provide bundle through the same checks and
the same transaction engine: the Binary (with the document, bound to the entry), the entry as a
PDSm comprehensive DocumentReference (data replaced by `url`, `size`, SHA-1 `hash`, and the
defaults below), and a submission set recording who submitted it. Either all three are stored, or
nothing. The answer is the stored DocumentReference (201), or the existing one (200) when the
same document was already published under the same masterIdentifier (a retried request).

Defaults for what PDSm makes mandatory in a stored entry but optional in a simplified publish:
confidentiality N, language fr-FR, creation = date, format "MIME type sufficient", period start =
creation, source patient = subject. Type, class, facility type and practice setting have no sound
default: they must be sent (a patient's settings are filled in, see patient_documents.py).
"""

from __future__ import annotations

import copy
import dataclasses
import uuid
from collections.abc import Callable
from datetime import datetime
from urllib.parse import parse_qsl

from fhir_server.engine.errors import FhirError, Issue, error
from fhir_server.engine.model import RequestContext, Result, instant, now
from fhir_server.mhd import canonical
from fhir_server.mhd.actors import actor_kind
from fhir_server.mhd.config import MhdSettings
from fhir_server.mhd.documents import attachments, decode_base64, master_identifier, sha1_base64
from fhir_server.mhd.patient_documents import PatientDocuments
from fhir_server.mhd.profiles import ProfileCheck
from fhir_server.mhd.submission_source import submission_source

RunTransaction = Callable[[dict, RequestContext], dict]
FindIds = Callable[[str, list[tuple[str, str]]], list[str]]
Read = Callable[[str, str, RequestContext], Result]

SUBMISSION, DOCUMENT, BINARY = 0, 1, 2          # entries of the provide bundle built here
NORMAL = {"coding": [{"system": canonical.CONFIDENTIALITY, "code": "N", "display": "normal"}]}
MIME_TYPE_SUFFICIENT = {"system": canonical.IHE_FORMAT, "code": canonical.MIME_TYPE_SUFFICIENT,
                        "display": "Format déduit du type MIME"}


class SimplifiedPublish:
    def __init__(self, profiles: ProfileCheck, run_transaction: RunTransaction, find_ids: FindIds, read: Read,
                 settings: MhdSettings, patients: PatientDocuments) -> None:
        self.profiles = profiles
        self.run_transaction = run_transaction
        self.find_ids = find_ids
        self.read = read
        self.settings = settings
        self.patients = patients

    def publish(self, posted: dict, ctx: RequestContext, if_none_exist: str | None = None) -> Result:
        document = self.patients.fill_in(copy.deepcopy(posted), ctx)
        _raise_if_any(self.profiles.errors(document, canonical.SIMPLIFIED_PUBLISH))
        found = next(attachments(document))          # the profile allows exactly one content
        attachment = found.attachment
        content = decode_base64(attachment.get("data"))
        if content is None:
            raise error(400, "invalid", f"{found.expression}.data is not valid base64", f"{found.expression}.data")
        if actor_kind(ctx) == "patient":
            self.patients.check_content(attachment.get("contentType"), len(content), found.expression)
        _check_declared(attachment, content, found.expression)
        existing = self._already_published(document, content, ctx, if_none_exist)
        if existing is not None:
            return existing
        stored = comprehensive(document, content, binary_url=_urn())
        _raise_if_any(self.profiles.errors(stored, canonical.COMPREHENSIVE_DOCUMENT))
        bundle = provide_bundle(stored, attachment, self._submission_set(stored))
        try:
            response = self.run_transaction(bundle, dataclasses.replace(ctx, prefer_return="representation"))
        except FhirError as exc:
            raise _as_posted(exc) from None
        return _created(response["entry"][DOCUMENT])

    def _already_published(self, document: dict, content: bytes, ctx: RequestContext,
                           if_none_exist: str | None) -> Result | None:
        """The entry already stored under this masterIdentifier (or If-None-Exist), when it holds the
        very same document: a retried publication is answered, not stored twice."""
        criteria: list[tuple[str, str]] = []
        if if_none_exist:
            criteria = parse_qsl(if_none_exist.split("?", 1)[-1], keep_blank_values=True)
        elif (identifier := master_identifier(document)) is not None:
            criteria = [("identifier", "|".join(identifier))]
        matches = self.find_ids("DocumentReference", criteria) if criteria else []
        if not matches:
            return None
        existing = self.read("DocumentReference", matches[0], ctx)
        stored_hash = next((a.attachment.get("hash") for a in attachments(existing.body or {})), None)
        if if_none_exist or stored_hash == sha1_base64(content):
            existing.status = 200
            return existing
        raise error(409, "duplicate", f"masterIdentifier {'|'.join(master_identifier(document) or ())} already "
                    f"names another document (DocumentReference/{matches[0]}); a new version of a document "
                    "replaces it (relatesTo.code = replaces) under its own masterIdentifier",
                    "DocumentReference.masterIdentifier")

    def _submission_set(self, document: dict) -> dict:
        """The submission set of a simplified publication: submitted now, by the entry's first author
        (as a source PDSm accepts, see submission_source.py)."""
        source = submission_source(document)
        context = document.get("context") or {}
        designation = context.get("practiceSetting") or context.get("facilityType")
        return {
            "resourceType": "List",
            "meta": {"profile": [canonical.SUBMISSION_SET]},
            "contained": source.contained,
            "extension": [
                {"url": canonical.DESIGNATION_TYPE, "valueCodeableConcept": designation},
                {"url": canonical.SOURCE_ID, "valueIdentifier": {"system": canonical.RFC3986,
                                                                 "value": self.settings.source_oid}},
            ],
            "identifier": [{"use": "usual", "system": canonical.RFC3986, "value": _unique_oid()}],
            "status": "current",
            "mode": "working",
            "title": "Publication simplifiée (ITI-105)",
            "code": {"coding": [{"system": canonical.LIST_TYPES, "code": canonical.SUBMISSIONSET_CODE}]},
            "subject": document["subject"],
            "date": instant(now()),
            "source": source.reference,
        }


def comprehensive(document: dict, content: bytes, binary_url: str) -> dict:
    """The stored form of a simplified publication (PDSm comprehensive DocumentReference)."""
    stored = copy.deepcopy(document)
    stored["meta"] = {**(stored.get("meta") or {}), "profile": [canonical.COMPREHENSIVE_DOCUMENT]}
    stored.setdefault("securityLabel", [NORMAL])
    entry = stored["content"][0]
    attachment = entry["attachment"]
    del attachment["data"]
    attachment.update({"url": binary_url, "size": len(content), "hash": sha1_base64(content)})
    attachment.setdefault("language", "fr-FR")
    attachment.setdefault("creation", stored.get("date"))
    entry.setdefault("format", MIME_TYPE_SUFFICIENT)
    context = stored.setdefault("context", {})
    context.setdefault("period", {})
    context["period"].setdefault("start", attachment.get("creation"))
    context.setdefault("sourcePatientInfo", copy.deepcopy(stored.get("subject")))
    return stored


def provide_bundle(document: dict, attachment: dict, submission: dict) -> dict:
    """The ITI-65 bundle equivalent to a simplified publication."""
    document_url, binary_url, submission_url = _urn(), document["content"][0]["attachment"]["url"], _urn()
    submission["entry"] = [{"item": {"reference": document_url}}]
    binary = {"resourceType": "Binary", "contentType": attachment.get("contentType"),
              "securityContext": {"reference": document_url}, "data": attachment["data"]}
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [canonical.PROVIDE_BUNDLE]},
        "type": "transaction",
        "entry": [
            {"fullUrl": submission_url, "resource": submission, "request": {"method": "POST", "url": "List"}},
            {"fullUrl": document_url, "resource": document, "request": {"method": "POST", "url": "DocumentReference"}},
            {"fullUrl": binary_url, "resource": binary, "request": {"method": "POST", "url": "Binary"}},
        ],
    }


def _check_declared(attachment: dict, content: bytes, expression: str) -> None:
    """A simplified publish may state size and hash; when it does, they must be right."""
    if "size" in attachment and attachment["size"] != len(content):
        raise error(422, "value", f"{expression}.size is {attachment['size']} but the document in data is "
                    f"{len(content)} bytes long", f"{expression}.size")
    if "hash" in attachment and attachment["hash"] != sha1_base64(content):
        raise error(422, "value", f"{expression}.hash is not the SHA-1 of the document in data "
                    f"({sha1_base64(content)})", f"{expression}.hash")


def _as_posted(exc: FhirError) -> FhirError:
    """Errors about the bundle built here, told in terms of the posted DocumentReference."""
    moves = ((f"Bundle.entry[{DOCUMENT}].resource", "DocumentReference"),
             (f"Bundle.entry[{BINARY}].resource", "DocumentReference.content[0].attachment"))
    issues = []
    for issue in exc.issues:
        expressions, diagnostics = issue.expression, issue.diagnostics
        for entry, location in moves:
            expressions = tuple(location + e[len(entry):] if e.startswith(entry) else e for e in expressions)
            diagnostics = diagnostics.replace(entry, location).removeprefix(entry.removesuffix(".resource") + ": ")
        issues.append(Issue(issue.severity, issue.code, diagnostics, expressions))
    return FhirError(exc.status, issues, exc.headers)


def _created(entry: dict) -> Result:
    response = entry.get("response", {})
    version = response.get("etag", "").removeprefix('W/"').rstrip('"') or None
    modified = response.get("lastModified")
    result = Result(201, entry.get("resource"), version,
                    datetime.fromisoformat(modified.replace("Z", "+00:00")) if modified else None)
    result.location = response.get("location")
    return result


def _raise_if_any(issues: list[Issue]) -> None:
    if issues:
        raise FhirError(422, issues)


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _unique_oid() -> str:
    return "urn:oid:2.25." + str(uuid.uuid4().int)

"""Reading PDSm resources: small pure functions over DocumentReference and List dicts, shared by
the transactions and the rules (no storage, no HTTP)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

from fhir_server.mhd import canonical

_PATIENT_REFERENCE = re.compile(r"^Patient/[A-Za-z0-9\-.]{1,64}$")
_BINARY_REFERENCE = re.compile(r"^(?:.*/)?Binary/([A-Za-z0-9\-.]{1,64})$")


@dataclass(frozen=True)
class AttachmentAt:
    """One `content[i].attachment` of a DocumentReference, with its FHIRPath location."""

    index: int
    attachment: dict

    @property
    def expression(self) -> str:
        return f"DocumentReference.content[{self.index}].attachment"


def attachments(document: dict) -> Iterator[AttachmentAt]:
    for index, content in enumerate(_as_list(document.get("content"))):
        attachment = content.get("attachment") if isinstance(content, dict) else None
        if isinstance(attachment, dict):
            yield AttachmentAt(index, attachment)


def binary_id(url: object) -> str | None:
    """`Binary/abc` (or an absolute URL ending so) -> `abc`."""
    if not isinstance(url, str):
        return None
    match = _BINARY_REFERENCE.match(url)
    return match.group(1) if match else None


def is_patient_reference(reference: object) -> bool:
    return isinstance(reference, str) and _PATIENT_REFERENCE.match(reference) is not None


def subject_reference(resource: dict) -> str | None:
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    return reference if isinstance(reference, str) else None


def claims_profile(resource: dict, urls: frozenset[str] | set[str] | str) -> bool:
    wanted = {urls} if isinstance(urls, str) else urls
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return any(p.split("|", 1)[0] in wanted for p in _as_list(profiles) if isinstance(p, str))


def is_simplified_publish(document: dict) -> bool:
    """An ITI-105 Simplified Publish: it says so, or it carries its document inline."""
    return claims_profile(document, canonical.SIMPLIFIED_PUBLISH) or any(
        "data" in a.attachment for a in attachments(document))


def list_kind(resource: dict) -> str | None:
    """`submissionset` or `folder` for an MHD List, else None."""
    code = resource.get("code")
    for coding in _as_list(code.get("coding") if isinstance(code, dict) else None):
        if isinstance(coding, dict) and coding.get("system") == canonical.LIST_TYPES:
            value = coding.get("code")
            if value in (canonical.SUBMISSIONSET_CODE, canonical.FOLDER_CODE):
                return value
    return None


def security_codes(resource: dict) -> set[tuple[str | None, str | None]]:
    return {(c.get("system"), c.get("code")) for label in _as_list(resource.get("securityLabel"))
            if isinstance(label, dict) for c in _as_list(label.get("coding")) if isinstance(c, dict)}


def label_codes(resource: dict) -> set[str]:
    """The codes of the security labels, compared by code alone as the access policy does (the
    TRE_A07 system is spelled two ways in the published material)."""
    return {code for _, code in security_codes(resource) if isinstance(code, str)}


def is_archived(resource: dict) -> bool:
    return any(isinstance(e, dict) and e.get("url") == canonical.IS_ARCHIVED and e.get("valueBoolean") is True
               for e in _as_list(resource.get("extension")))


def replaced_targets(document: dict) -> Iterator[tuple[int, str]]:
    """(index in relatesTo, literal reference) of the entries this document replaces."""
    for index, relation in enumerate(_as_list(document.get("relatesTo"))):
        if isinstance(relation, dict) and relation.get("code") == "replaces":
            target = relation.get("target")
            reference = target.get("reference") if isinstance(target, dict) else None
            if isinstance(reference, str):
                yield index, reference


def master_identifier(document: dict) -> tuple[str, str] | None:
    identifier = document.get("masterIdentifier")
    if not isinstance(identifier, dict) or not isinstance(identifier.get("value"), str):
        return None
    return identifier.get("system") or "", identifier["value"]


def decode_base64(data: object) -> bytes | None:
    """The bytes of a base64Binary, or None when it is not valid base64."""
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:        # base64Binary allows whitespace between the groups
            return base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            return None


def sha1_base64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def _as_list(value: object) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


as_list = _as_list

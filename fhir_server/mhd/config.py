"""Settings of the document sharing module, from environment variables (see README,
"Configuration")."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field

MIB = 1024 * 1024
# The OID naming this server as the source of the submission sets it writes itself (ITI-105);
# a UUID-derived OID (arc 2.25) until a registered one is configured.
DEFAULT_SOURCE_OID = "urn:oid:2.25." + str(uuid.UUID("6f3b1d2e-9c1a-4e55-8a61-3f0c2d7b9e40").int)


def _int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _list(name: str, default: str) -> frozenset[str]:
    return frozenset(v.strip().lower() for v in os.environ.get(name, default).split(",") if v.strip())


@dataclass(frozen=True)
class MhdSettings:
    # Binaries whose content is larger than this go to GridFS and are streamed on read.
    inline_max_bytes: int = field(default_factory=lambda: _int("FHIR_BINARY_INLINE_MAX_BYTES", 1 * MIB))
    # What a patient may publish into their own space (ITI-105 with a patient token).
    patient_max_bytes: int = field(default_factory=lambda: _int("FHIR_MHD_PATIENT_MAX_BYTES", 20 * MIB))
    patient_content_types: frozenset[str] = field(default_factory=lambda: _list(
        "FHIR_MHD_PATIENT_CONTENT_TYPES", "application/pdf,image/jpeg,image/png"))
    source_oid: str = field(default_factory=lambda: os.environ.get("FHIR_MHD_SOURCE_OID", DEFAULT_SOURCE_OID))
    # Custodian of the documents patients add themselves (the health space keeps them).
    custodian_name: str = field(default_factory=lambda: os.environ.get("FHIR_MHD_CUSTODIAN", "Mon espace santé"))

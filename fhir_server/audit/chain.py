"""The hash chain that makes the audit trail tamper-evident (pure functions).

Each AuditEvent carries, in the `audit-chain` extension, the hash of the previous AuditEvent of
the same chain (one chain per patient, plus one for events without patient) and its own hash:

    hash = SHA-256( previous-hash-hex "\\n" canonical-JSON(event without the audit-chain extension) )

The canonical JSON sorts keys and has no insignificant whitespace (UTF-8, like RFC 8785 for the
values we store: strings, booleans and integers), so any change to a stored event, including to
the order of the chain, shows in a recomputation.
"""

from __future__ import annotations

import copy
import hashlib
import json

from fhir_server.audit.codes import CHAIN_URL

GENESIS = "0" * 64              # the `previous` of the first event of a chain
NO_PATIENT = "none"             # chain of the events without patient entity
CHAIN_KEY_PREFIX = "audit-chain:"


def chain_key(patient: str | None) -> str:
    """The `_meta` key holding a chain's head: `audit-chain:Patient/x` or `audit-chain:none`."""
    return CHAIN_KEY_PREFIX + (patient or NO_PATIENT)


def patient_of_key(key: str) -> str | None:
    name = key.removeprefix(CHAIN_KEY_PREFIX)
    return None if name == NO_PATIENT else name


def canonical_json(resource: dict) -> bytes:
    return json.dumps(resource, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def without_chain(resource: dict) -> dict:
    """A copy of the event without the audit-chain extension (what the hash covers)."""
    copied = copy.deepcopy(resource)
    kept = [e for e in copied.get("extension", []) if not (isinstance(e, dict) and e.get("url") == CHAIN_URL)]
    if kept:
        copied["extension"] = kept
    else:
        copied.pop("extension", None)
    return copied


def chain_hash(resource: dict, previous: str) -> str:
    return _hash_of_bare(without_chain(resource), previous)


def _hash_of_bare(bare: dict, previous: str) -> str:
    """The hash of an event already stripped of its audit-chain extension."""
    return hashlib.sha256(previous.encode("ascii") + b"\n" + canonical_json(bare)).hexdigest()


def with_chain(resource: dict, previous: str) -> dict:
    """A copy of the event with its audit-chain extension (placed right after `meta`, as FHIR
    JSON orders elements); the hash covers everything else."""
    bare = without_chain(resource)            # the one deep copy: hashed, then reused
    digest = _hash_of_bare(bare, previous)
    extension = {"url": CHAIN_URL, "extension": [{"url": "previous", "valueString": previous},
                                                 {"url": "hash", "valueString": digest}]}
    others = bare.pop("extension", [])
    chained: dict = {}
    for key, value in bare.items():
        chained[key] = value
        if key == "meta":
            chained["extension"] = [*others, extension]
    if "extension" not in chained:
        chained = {"extension": [*others, extension], **chained}
    return chained


def chain_facts(resource: dict) -> tuple[str, str] | None:
    """(previous, hash) from the event's audit-chain extension, or None without one."""
    for extension in resource.get("extension", []) or []:
        if isinstance(extension, dict) and extension.get("url") == CHAIN_URL:
            values = {e.get("url"): e.get("valueString") for e in extension.get("extension", []) if isinstance(e, dict)}
            if isinstance(values.get("previous"), str) and isinstance(values.get("hash"), str):
                return values["previous"], values["hash"]
    return None


def patients_of_event(resource: dict) -> list[str]:
    """Patient entities (audit-entity-type#1, object-role#1) of an AuditEvent."""
    found = []
    for entity in resource.get("entity", []) or []:
        role = (entity.get("role") or {}).get("code")
        reference = (entity.get("what") or {}).get("reference", "")
        if role == "1" and isinstance(reference, str) and reference.startswith("Patient/"):
            found.append(reference)
    return found
